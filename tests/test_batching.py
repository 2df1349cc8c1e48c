"""Batching (data/batching.py): padding with masks, aspect-ratio groups over random and
distributed samplers."""

import pytest
import torch
from torch.utils.data import DistributedSampler, RandomSampler

from detr_irpe.data.batching import GroupedBatchSampler, aspect_ratio_groups, collate


def test_collate_pads_bottom_right_and_masks():
    a, b = torch.rand(3, 4, 6) + 1, torch.rand(3, 7, 3) + 1  # + 1: no real pixel is zero
    images, mask, targets = collate([(a, {"i": 0}), (b, {"i": 1})])
    assert images.shape == (2, 3, 7, 6) and mask.shape == (2, 7, 6) and mask.dtype == torch.bool
    assert torch.equal(images[0, :, :4, :6], a) and torch.equal(images[1, :, :7, :3], b)
    assert torch.equal(mask, (images == 0).all(1))  # True exactly where padding is
    assert mask[0, 4:].all() and not mask[0, :4].any() and mask[1, :, 3:].all() and not mask[1, :, :3].any()
    assert [t["i"] for t in targets] == [0, 1]


def check_grouped(batches, expected_indices, groups, batch_size):
    flat = [i for b in batches for i in b]
    assert sorted(flat) == sorted(expected_indices)  # every index exactly once
    for b in batches:
        assert 0 < len(b) <= batch_size and len({groups[i] for i in b}) == 1


def test_grouped_batches_random_sampler():
    gen = torch.Generator().manual_seed(0)
    groups = aspect_ratio_groups(torch.rand(23, generator=gen).mul(2).tolist())
    assert set(groups) == {0, 1}
    sampler = RandomSampler(range(23), generator=torch.Generator().manual_seed(1))
    gbs = GroupedBatchSampler(sampler, groups, 4)
    first = list(gbs)
    check_grouped(first, range(23), groups, 4)
    assert len(gbs) == len(first)
    second = list(gbs)
    check_grouped(second, range(23), groups, 4)
    assert first != second  # a new order each epoch
    assert len(gbs) == len(list(gbs))  # asking for the length does not disturb the order


@pytest.mark.parametrize("drop_last", [False, True])
def test_grouped_batches_distributed_sampler(drop_last):
    groups = [int(i % 3 == 0) for i in range(37)]
    per_rank, lengths = [], []
    for rank in range(2):
        sampler = DistributedSampler(range(37), num_replicas=2, rank=rank, shuffle=True, seed=3)
        gbs = GroupedBatchSampler(sampler, groups, 4, drop_last=drop_last)
        gbs.set_epoch(1)
        batches = list(gbs)
        assert len(batches) == len(gbs)
        lengths.append(len(gbs))
        if drop_last:
            assert len(batches) == len(sampler) // 4 and all(len(b) == 4 for b in batches)
            assert all(len({groups[i] for i in b}) == 1 for b in batches)
            assert set(i for b in batches for i in b) <= set(sampler)
        else:
            check_grouped(batches, list(sampler), groups, 4)
        gbs.set_epoch(2)
        assert list(gbs) != batches
        per_rank.append({i for b in batches for i in b})
    if drop_last:
        assert lengths[0] == lengths[1]  # equal step counts, as DDP needs
    else:
        assert per_rank[0] | per_rank[1] == set(range(37))
