"""Inference throughput: images/s at batch 1 and 4, without and with iRPE, float32 and bf16
autocast (where the device supports it), optionally compiled; optionally the reference code's
model beside it (never compiled: it runs as its own code does)."""

from __future__ import annotations

import torch

from ..config import load_config
from ..models import build_model
from .common import machine_description, print_table, time_interleaved

VARIANTS = {"no iRPE": "", "rpe-2.0-product-ctx-1-k": "rpe-2.0-product-ctx-1-k"}


def _bf16_supported(dev: torch.device) -> bool:
    """bf16 arithmetic in hardware: on CPUs without AVX512-BF16 or AMX autocast only emulates it."""
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check()) or bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _setup(irpe, backbone, batch, height, width, device, dtype, compile_, reference=None):
    torch.manual_seed(0)
    dev = torch.device(device)
    images = torch.randn(batch, 3, height, width, device=dev)
    mask = torch.zeros(batch, height, width, dtype=torch.bool, device=dev)
    sizes = torch.tensor([[height, width]] * batch, device=dev)
    if reference is None:
        cfg = load_config(None, [f"model.backbone.name={backbone}", "model.backbone.weights=none", f"model.irpe={irpe}"])
        model, _, post = build_model(cfg)
        fwd = torch.compile(model) if compile_ else model
        forward = lambda: fwd(images, mask)
    else:
        from .reference import build_reference, reference_batch

        model, _, post = build_reference(reference, irpe, backbone, device)
        forward = lambda: model(reference_batch(list(images)))
    model.to(dev).eval()

    def step():
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            post["bbox"](forward(), sizes)

    return step


def run(device="cpu", backbone="resnet50", height=800, width=1066, repeats=3, as_json=False, compile_=False,
        batches=(1, 4), dtypes=("fp32", "bf16"), reference=None):
    """Print the inference table (and the reference code's rows when ``reference`` names its
    checkout); returns its rows."""
    dev = torch.device(device)
    skipped = [d for d in dtypes if d != "fp32" and not _bf16_supported(dev)]
    dtypes = [d for d in dtypes if d not in skipped]
    codes = [("this project", None)] + ([("reference", reference)] if reference else [])
    fns = {}
    for b in batches:
        for dtype in dtypes:
            for code, path in codes:
                if path and dtype == "bf16":
                    continue  # the reference has no mixed precision: its rpe_ops take float32 only
                for n, spec in VARIANTS.items():
                    fns[(code, n, b, dtype)] = _setup(spec, backbone, b, height, width, device, dtype,
                                                      compile_ and path is None, path)
    times = time_interleaved(fns, dev, repeats, warmup=2 if compile_ else 1)
    rows = []
    for case, t in times.items():
        base = times[("this project",) + case[1:]]
        rows.append([*case, t * 1e3, case[2] / t, t / base])
    extra = {"machine": machine_description(dev),
             "setting": f"DETR-{backbone}, {height} x {width} inputs{' (COCO validation size)' if (height, width) == (800, 1066) else ''}, "
                        f"model + post-processing, "
                        f"torch.compile {'on (this project)' if compile_ else 'off'}, median of {repeats}; speed-up: "
                        f"the row's time over this project's for the same variant, batch and dtype"
                        + (f"; {', '.join(skipped)} left out: no hardware support on this device" if skipped else "")}
    print_table("Inference", ["code", "variant", "batch", "dtype", "ms/batch", "images/s", "this project's speed-up"], rows,
                as_json, extra)
    return rows
