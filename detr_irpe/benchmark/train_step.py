"""One DETR training step (forward, loss with matching, backward, clipping, AdamW) on two images
of about 512 x 683, without iRPE and with rpe-2.0-product-ctx-1-k, side by side."""

from __future__ import annotations

import torch

from ..config import load_config
from ..engine.evaluation import autocast_context
from ..engine.optim import build_optimizer
from ..models import build_model
from .common import machine_description, peak_memory, print_table, time_interleaved

VARIANTS = {"no iRPE": "", "rpe-2.0-product-ctx-1-k": "rpe-2.0-product-ctx-1-k"}


def _setup(irpe: str, backbone: str, height: int, width: int, device: str, amp: str = "none", kernel: str = "auto"):
    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = load_config(None, [f"model.backbone.name={backbone}", "model.backbone.weights=none", f"model.irpe={irpe}",
                             f"model.attention_kernel={kernel}"])
    model, criterion, _ = build_model(cfg)
    model.to(dev).train()
    criterion.to(dev)
    opt = build_optimizer(model, cfg.train)
    g = torch.Generator().manual_seed(1)
    # two images of slightly different sizes, as a batch of COCO images after the training resize
    images = [torch.randn(3, height, width, generator=g).to(dev), torch.randn(3, height - 32, width + 21, generator=g).to(dev)]
    targets = []
    for n in (7, 4):
        cxcy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
        targets.append({"labels": torch.randint(1, 91, (n,), generator=g).to(dev), "boxes": torch.cat([cxcy, wh], 1).to(dev)})

    def step():
        with autocast_context(dev, amp):
            out = model(images)
        losses = criterion(out, targets)
        loss = sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def run(device="cpu", backbone="resnet50", height=512, width=683, repeats=5, memory=True, as_json=False, amp="none"):
    """Print the training-step table; returns its rows."""
    dev = torch.device(device)
    fns = {n: _setup(s, backbone, height, width, device, amp) for n, s in VARIANTS.items()}
    times = time_interleaved(fns, dev, repeats, warmup=2)
    base = times["no iRPE"]
    rows = []
    for n, spec in VARIANTS.items():
        mem = peak_memory(_setup, (spec, backbone, height, width, device, amp), dev) if memory else float("nan")
        rows.append([n, times[n], 2 / times[n], mem, f"{100 * (times[n] / base - 1):+.1f}%"])
    extra = {"machine": machine_description(dev),
             "step": f"DETR-{backbone} (6+6 layers, 100 queries), 2 images ~{height} x {width}, forward + loss with "
                     f"Hungarian matching + backward + clip + AdamW, amp {amp}, median of {repeats}"}
    print_table("Training step", ["variant", "s/step", "images/s", "peak MiB", "iRPE overhead"], rows, as_json, extra)
    return rows
