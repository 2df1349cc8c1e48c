"""The iRPE attention cost in DETR's encoder: forward (inference) and forward + backward
(training, dropout on) for the encoder shape of DETR-R50, each variant against no iRPE."""

from __future__ import annotations

import torch

from ..models.irpe import RPESpec
from ..models.transformer import Encoder, EncoderLayer
from ..models.position_encoding import PositionEmbeddingSine
from .common import machine_description, peak_memory, print_table, time_interleaved

VARIANTS = {
    "no iRPE": "",
    "product-ctx-shared-k (2.0)": "rpe-2.0-product-ctx-1-k",
    "product-ctx-shared-k (1.9)": "rpe-1.9-product-ctx-1-k",
    "product-bias-k": "rpe-2.0-product-bias-1-k",
    "cross-ctx-k": "rpe-2.0-cross-ctx-1-k",
    "euc-ctx-qkv": "rpe-2.0-euc-ctx-1-qkv",
}


def _setup(spec_text: str, batch: int, height: int, width: int, dim: int, heads: int, layers: int,
           device: str, train: bool, kernel: str = "auto", dtype=torch.float32):
    torch.manual_seed(0)
    dev = torch.device(device)
    layer = EncoderLayer(dim, heads, 8 * dim, 0.1, False, RPESpec.parse(spec_text), kernel)
    enc = Encoder(layer, layers).to(dev, dtype)
    enc.train(train)
    x = torch.randn(batch, height * width, dim, device=dev, dtype=dtype)
    mask = torch.zeros(batch, height, width, dtype=torch.bool, device=dev)
    pos = PositionEmbeddingSine(dim // 2)(mask).flatten(2).transpose(1, 2).to(dtype)
    mask = mask.flatten(1)

    def step():
        if train:
            out, _ = enc(x, mask, pos, (height, width))
            out.float().square().mean().backward()
        else:
            with torch.no_grad():
                enc(x, mask, pos, (height, width))

    return step


def run(batch=2, height=25, width=34, dim=256, heads=8, layers=6, device="cpu", repeats=5, memory=True,
        as_json=False, variants=None, kernel="auto"):
    """Print the encoder table; returns its rows."""
    dev = torch.device(device)
    names = variants or list(VARIANTS)
    rows, fwd, train = [], {}, {}
    args = (batch, height, width, dim, heads, layers, device)
    fwd = time_interleaved({n: _setup(VARIANTS[n], *args, train=False, kernel=kernel) for n in names}, dev, repeats)
    train = time_interleaved({n: _setup(VARIANTS[n], *args, train=True, kernel=kernel) for n in names}, dev, repeats)
    base_f, base_t = fwd[names[0]], train[names[0]]
    for n in names:
        mem = peak_memory(_setup, (VARIANTS[n],) + args + (True, kernel), dev) if memory else float("nan")
        rows.append([n, VARIANTS[n] or "-", fwd[n] * 1e3, fwd[n] / base_f, train[n] * 1e3, train[n] / base_t, mem])
    cols = ["variant", "spec", "forward ms", "x no-iRPE", "fwd+bwd ms", "x no-iRPE", "peak MiB (fwd+bwd)"]
    extra = {"machine": machine_description(dev),
             "shape": f"batch {batch}, {height} x {width} tokens, d {dim}, {heads} heads, {layers} layers, "
                      f"forward in eval mode without autograd, fwd+bwd in train mode (dropout 0.1), "
                      f"median of {repeats}, kernel {kernel}"}
    print_table("Encoder: iRPE cost", cols, rows, as_json, extra)
    return rows
