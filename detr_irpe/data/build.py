"""Datasets and loaders from a Config, built so that a run can be resumed exactly, even mid-epoch.

Two choices make that possible: the batch order of an epoch is a function of (seed, epoch) and can
start at any batch, and every image is augmented with a random generator seeded by (seed, epoch,
image index), so that what an image looks like does not depend on which worker loaded it or on
what ran before.
"""

from __future__ import annotations

import functools
import hashlib

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from .batching import GroupedBatchSampler, aspect_ratio_groups, collate
from .coco import CocoDetection, coco_paths
from .synthetic import ensure_synthetic_split
from .transforms import build_transforms


def build_dataset(cfg, split: str, transforms: bool = True) -> "AugmentedDataset":
    """The ``train`` or ``val`` split of ``cfg.data`` with its transforms; category ids are checked
    against ``model.num_classes`` (null: the split's largest id + 1)."""
    data = cfg.data
    if data.dataset == "synthetic":
        images, annotations = ensure_synthetic_split(data.synthetic, split)
    else:
        images, annotations = coco_paths(data, split)
    base = CocoDetection(images, annotations, invalid_images=data.invalid_images, num_classes=cfg.model.num_classes,
                         max_image_pixels=data.max_image_pixels)
    tf = build_transforms(data, train=split == "train") if transforms else None
    return AugmentedDataset(base, tf, cfg.train.seed)


def _mix(*values: int) -> int:
    digest = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class AugmentedDataset(Dataset):
    """A dataset whose items are transformed with a generator seeded by (seed, epoch, index).
    Items are addressed by index or by ``(epoch, index)`` (what EpochBatchSampler yields)."""

    def __init__(self, base: CocoDetection, transforms, seed: int):
        self.base, self.transforms, self.seed = base, transforms, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, target = self.base[index]
        if self.transforms is None:
            return image, target
        generator = torch.default_generator
        state = generator.get_state()
        try:
            # the default generator, re-seeded: the transforms draw from it
            generator.manual_seed(_mix(self.seed, epoch, index))
            return self.transforms(image, target)
        finally:
            generator.set_state(state)

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def coco(self):
        return self.base.coco

    def aspect_ratios(self):
        return self.base.aspect_ratios()


class EpochBatchSampler(Sampler):
    """Batches of ``(epoch, index)`` keys for one process: the DistributedSampler order of the
    epoch (seeded, shuffled in training), optionally grouped by aspect ratio, starting at batch
    ``skip`` (a resumed run does not load what it already consumed)."""

    def __init__(self, dataset: AugmentedDataset, batch_size: int, train: bool, world_size: int = 1, rank: int = 0,
                 seed: int = 0, group_ids=None):
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed,
                                          drop_last=False)
        self.batch_size, self.train, self.group_ids = batch_size, train, group_ids
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.sampler.set_epoch(epoch)

    def _batches(self):
        if self.group_ids is not None:
            return GroupedBatchSampler(self.sampler, self.group_ids, self.batch_size, drop_last=self.train)
        return BatchSampler(self.sampler, self.batch_size, drop_last=self.train)

    def __iter__(self):
        for i, batch in enumerate(self._batches()):
            if i >= self.skip:
                yield [(self.epoch, j) for j in batch]

    def __len__(self) -> int:
        return len(self._batches())


def build_loader(dataset: AugmentedDataset, cfg, train: bool, world_size: int = 1, rank: int = 0) -> DataLoader:
    """A DataLoader of ``collate`` batches; call ``loader.batch_sampler.set_epoch(epoch, skip)``
    before each training epoch."""
    data = cfg.data
    batch_size = cfg.train.batch_size if train else cfg.eval.batch_size
    groups = aspect_ratio_groups(dataset.aspect_ratios()) if train and data.aspect_ratio_grouping else None
    sampler = EpochBatchSampler(dataset, batch_size, train, world_size, rank, cfg.train.seed, groups)
    workers = data.num_workers
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                      collate_fn=functools.partial(collate, size_divisibility=data.size_divisibility),
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      # the loader's own generator: creating an iterator leaves the global RNG alone
                      generator=torch.Generator().manual_seed(cfg.train.seed + rank))
