"""Inference throughput: images/s at batch 1 and 4, without and with iRPE, float32 and bf16
autocast (where the device supports it), optionally compiled."""

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


def _setup(irpe, backbone, batch, height, width, device, dtype, compile_):
    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = load_config(None, [f"model.backbone.name={backbone}", "model.backbone.weights=none", f"model.irpe={irpe}"])
    model, _, post = build_model(cfg)
    model.to(dev).eval()
    fwd = torch.compile(model) if compile_ else model
    images = torch.randn(batch, 3, height, width, device=dev)
    mask = torch.zeros(batch, height, width, dtype=torch.bool, device=dev)
    sizes = torch.tensor([[height, width]] * batch, device=dev)

    def step():
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            post["bbox"](fwd(images, mask), sizes)

    return step


def run(device="cpu", backbone="resnet50", height=800, width=1066, repeats=3, as_json=False, compile_=False,
        batches=(1, 4), dtypes=("fp32", "bf16")):
    """Print the inference table; returns its rows."""
    dev = torch.device(device)
    skipped = [d for d in dtypes if d != "fp32" and not _bf16_supported(dev)]
    dtypes = [d for d in dtypes if d not in skipped]
    fns = {}
    for b in batches:
        for dtype in dtypes:
            for n, spec in VARIANTS.items():
                fns[(n, b, dtype)] = _setup(spec, backbone, b, height, width, device, dtype, compile_)
    times = time_interleaved(fns, dev, repeats, warmup=2 if compile_ else 1)
    rows = [[n, b, dtype, times[(n, b, dtype)] * 1e3, b / times[(n, b, dtype)]] for (n, b, dtype) in fns]
    extra = {"machine": machine_description(dev),
             "setting": f"DETR-{backbone}, {height} x {width} inputs (COCO validation size), model + post-processing, "
                        f"torch.compile {'on' if compile_ else 'off'}, median of {repeats}"
                        + (f"; {', '.join(skipped)} left out: no hardware support on this device" if skipped else "")}
    print_table("Inference", ["variant", "batch", "dtype", "ms/batch", "images/s"], rows, as_json, extra)
    return rows
