"""The iRPE attention cost in DETR's encoder: forward (inference) and forward + backward
(training, dropout on) for the encoder shape of DETR-R50, each variant and attention kernel
against no iRPE (kernel auto), optionally beside the reference code's encoder."""

from __future__ import annotations

import torch

from ..core.names import NO_VALUE_TERM
from ..models.attention_flex import backward_supported
from ..core.rpe_spec import RPESpec
from ..models.position_encoding import PositionEmbeddingSine
from ..models.transformer import Encoder, EncoderLayer
from .common import machine_description, peak_memory, print_table, time_interleaved

VARIANTS = {
    "no iRPE": "",
    "product-ctx-shared-k (2.0)": "rpe-2.0-product-ctx-1-k",
    "product-ctx-shared-k (1.9)": "rpe-1.9-product-ctx-1-k",
    "product-bias-k": "rpe-2.0-product-bias-1-k",
    "cross-ctx-k": "rpe-2.0-cross-ctx-1-k",
    "euc-ctx-qkv": "rpe-2.0-euc-ctx-1-qkv",
}
#: the kernel label of the reference code's rows
REFERENCE = "reference"


def _inputs(batch, height, width, dim, dev, dtype):
    torch.manual_seed(0)
    x = torch.randn(batch, height * width, dim, device=dev, dtype=dtype)
    mask = torch.zeros(batch, height, width, dtype=torch.bool, device=dev)
    pos = PositionEmbeddingSine(dim // 2)(mask).flatten(2).transpose(1, 2).to(dtype)
    return x, mask.flatten(1), pos


def _setup(spec_text: str, batch: int, height: int, width: int, dim: int, heads: int, layers: int,
           device: str, train: bool, kernel: str = "auto", reference: str | None = None, dtype=torch.float32):
    dev = torch.device(device)
    torch.manual_seed(0)
    if kernel == REFERENCE:
        from .reference import build_reference_encoder

        enc = build_reference_encoder(reference, spec_text, dim, heads, layers).to(dev, dtype)
    else:
        layer = EncoderLayer(dim, heads, 8 * dim, 0.1, False, RPESpec.parse(spec_text), kernel)
        enc = Encoder(layer, layers).to(dev, dtype)
    enc.train(train)
    x, mask, pos = _inputs(batch, height, width, dim, dev, dtype)
    if kernel == REFERENCE:  # sequence-first tensors
        x, pos = x.transpose(0, 1).contiguous(), pos.transpose(0, 1).contiguous()
        forward = lambda: enc(x, src_key_padding_mask=mask, pos=pos, hw=(height, width))
    else:
        forward = lambda: enc(x, mask, pos, (height, width))[0]

    def step():
        if train:
            forward().float().square().mean().backward()
        else:
            with torch.no_grad():
                forward()

    return step


def cases(names, kernels, device, reference=None) -> tuple[list[tuple[str, str]], list[str]]:
    """The (variant, kernel) rows of the table, no iRPE with kernel auto first, and notes on the
    combinations left out."""
    rows, notes = [("no iRPE", "auto")], []
    kernels = list(kernels) + ([REFERENCE] if reference else [])
    for kernel in kernels:
        if kernel == "flex" and not backward_supported(torch.device(device)):
            notes.append(f"flex: no backward pass on the {device} in torch {torch.__version__}")
            continue
        for name in names:
            spec = RPESpec.parse(VARIANTS[name])
            if kernel in NO_VALUE_TERM and spec is not None and "v" in spec.rpe_on:
                continue  # these kernels take no value term
            if kernel == REFERENCE and spec is not None and spec.method == "cross":
                notes.append("reference cross-ctx-k: the reference's cross method fails at construction")
                continue
            if (name, kernel) not in rows:
                rows.append((name, kernel))
    return rows, notes


def run(batch=2, height=25, width=34, dim=256, heads=8, layers=6, device="cpu", repeats=5, memory=True,
        as_json=False, variants=None, kernels=("auto",), reference=None):
    """Print the encoder table (every variant x kernel, plus the reference code's encoder when
    ``reference`` names its checkout); returns its rows."""
    dev = torch.device(device)
    rows_of, notes = cases(variants or list(VARIANTS), kernels, device, reference)
    args = (batch, height, width, dim, heads, layers, device)

    def fns(train):
        return {case: _setup(VARIANTS[case[0]], *args, train=train, kernel=case[1], reference=reference)
                for case in rows_of}

    fwd = time_interleaved(fns(False), dev, repeats)
    train = time_interleaved(fns(True), dev, repeats)
    base = rows_of[0]
    rows = []
    for case in rows_of:
        name, kernel = case
        mem = (peak_memory(_setup, (VARIANTS[name],) + args + (True, kernel, reference), dev) if memory
               else float("nan"))
        rows.append([name, kernel, fwd[case] * 1e3, fwd[case] / fwd[base], train[case] * 1e3,
                     train[case] / train[base], mem])
    cols = ["variant", "kernel", "forward ms", "x no-iRPE", "fwd+bwd ms", "x no-iRPE", "peak MiB (fwd+bwd)"]
    extra = {"machine": machine_description(dev),
             "shape": f"batch {batch}, {height} x {width} tokens, d {dim}, {heads} heads, {layers} layers, "
                      f"forward in eval mode without autograd, fwd+bwd in train mode (dropout 0.1), "
                      f"median of {repeats}; ratios against no iRPE with kernel auto"}
    if notes:
        extra["left out"] = "; ".join(dict.fromkeys(notes))
    print_table("Encoder: iRPE cost", cols, rows, as_json, extra)
    return rows
