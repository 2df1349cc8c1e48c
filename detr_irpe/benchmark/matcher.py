"""Hungarian matching time for a batch: one batched cost matrix, solved per image."""

from __future__ import annotations

import torch

from ..models.matcher import HungarianMatcher
from .common import machine_description, print_table, time_interleaved


def run(device="cpu", batches=(2, 8, 32), queries=100, classes=92, objects=20, repeats=20, as_json=False):
    """Print the matcher table; returns its rows."""
    dev = torch.device(device)
    matcher = HungarianMatcher()
    fns = {}
    for b in batches:
        g = torch.Generator().manual_seed(b)
        outputs = {"pred_logits": torch.randn(b, queries, classes, generator=g).to(dev),
                   "pred_boxes": torch.rand(b, queries, 4, generator=g).mul(0.5).add(0.1).to(dev)}
        targets = [{"labels": torch.randint(0, classes - 1, (objects,), generator=g).to(dev),
                    "boxes": torch.rand(objects, 4, generator=g).mul(0.5).add(0.1).to(dev)} for _ in range(b)]
        fns[b] = (lambda o=outputs, t=targets: matcher(o, t))
    times = time_interleaved(fns, dev, repeats, warmup=2)
    rows = [[b, queries, objects, times[b] * 1e3, times[b] * 1e3 / b] for b in batches]
    extra = {"machine": machine_description(dev), "setting": f"{queries} queries x {objects} objects per image, {classes} classes"}
    print_table("Hungarian matching", ["batch", "queries", "objects/image", "ms/batch", "ms/image"], rows, as_json, extra)
    return rows
