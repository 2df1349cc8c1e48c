"""Batching: padding with masks, aspect-ratio grouping, and the DataLoader with seeded workers."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import (RandomSampler, Sampler,
                              SubsetRandomSampler)

from ..models.detr import pad_images


def collate(batch: Sequence[tuple[torch.Tensor, dict]], size_divisibility: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """``(images (B, 3, H, W) zero-padded bottom/right to the largest (rounded up to a multiple of
    ``size_divisibility`` when > 0), mask (B, H, W) True on padding, list of targets)`` from a list
    of ``(image, target)`` items."""
    images, targets = zip(*batch)
    padded, mask = pad_images(list(images), size_divisibility)
    return padded, mask, list(targets)


def aspect_ratio_groups(aspect_ratios: Sequence[float]) -> list[int]:
    """Group id per image: 1 for width >= height, 0 for portrait images (torchvision's detection
    reference with a single bin at 1)."""
    return [int(r >= 1) for r in aspect_ratios]


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of the indices of ``sampler`` (in its order) in which every image has the same group
    id, so that batches of landscape and of portrait images need less padding.

    ``drop_last=False``: every index the sampler yields appears exactly once; each group's last
    batch may be smaller. ``drop_last=True``: exactly ``len(sampler) // batch_size`` full batches,
    the same number on every process (distributed training needs that); a group's incomplete last
    batch is completed with other images of the same group, as torchvision's reference does, and
    the remaining incomplete batches are dropped."""

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int, drop_last: bool = False):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.drop_last = drop_last

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to a sampler that reshuffles per epoch (DistributedSampler)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        seen: dict[int, list[int]] = defaultdict(list)
        produced = 0
        for index in self.sampler:
            group = self.group_ids[index]
            buffers[group].append(index)
            seen[group].append(index)
            if len(buffers[group]) == self.batch_size:
                yield buffers[group]
                buffers[group] = []
                produced += 1
        leftovers = [(group, buf) for group, buf in sorted(buffers.items()) if buf]
        if not self.drop_last:
            for _, buf in leftovers:
                yield buf
            return
        # leftovers hold fewer than batch_size each, so fewer batches are missing than groups have leftovers
        missing = len(self.sampler) // self.batch_size - produced
        for group, buf in sorted(leftovers, key=lambda item: len(item[1]), reverse=True)[:max(missing, 0)]:
            in_batch = set(buf)
            fill = [i for i in seen[group] if i not in in_batch] or buf
            yield buf + [fill[k % len(fill)] for k in range(self.batch_size - len(buf))]

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return sum(math.ceil(n / self.batch_size) for n in self._group_counts().values())

    def _group_counts(self) -> Counter:
        """Images per group in one epoch, without drawing from any RNG (so asking for the length
        does not change the order of the next epoch)."""
        s = self.sampler
        if isinstance(s, RandomSampler) and not s.replacement and s.num_samples == len(s.data_source):
            return Counter(self.group_ids[i] for i in range(len(s.data_source)))
        if isinstance(s, SubsetRandomSampler):
            return Counter(self.group_ids[i] for i in s.indices)
        # deterministic samplers (sequential, DistributedSampler for its current epoch)
        return Counter(self.group_ids[i] for i in s)
