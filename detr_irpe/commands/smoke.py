"""``detr-irpe smoke``: one training step of every iRPE variant on a small CPU model."""

from __future__ import annotations

import sys
import time

from .cli import Parser, parse_command_line

SMALL = ["model.backbone.name=cnn_tiny", "model.backbone.width=16", "model.backbone.weights=none",
         "model.backbone.norm=bn", "model.backbone.trainable_layers=[stem,layer1,layer2,layer3,layer4]",
         "model.hidden_dim=64", "model.nheads=4", "model.enc_layers=2", "model.dec_layers=2",
         "model.dim_feedforward=128", "model.num_queries=20", "model.num_classes=10"]
VARIANTS = ["", "rpe-2.0-product-ctx-1-k", "rpe-1.9-product-ctx-1-k", "rpe-2.0-product-bias-1-k",
            "rpe-2.0-cross-ctx-1-k", "rpe-2.0-euc-ctx-1-qkv", "rpe-2.0-quant-ctx-0-qk", "rpe-2.0-product-ctx-0-qkv"]


USAGE = """One training step of every iRPE variant on a small CPU model, as a table: loss, gradient flow
into the iRPE tables, parameters and time. A quick check that the installation works.
"""


def build_parser() -> Parser:
    parser = Parser(description=USAGE)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    return parser


def main(argv=None) -> int:
    args = parse_command_line(build_parser(), argv)
    import torch

    from ..config import load_config
    from ..models import build_model

    torch.manual_seed(0)
    images = [torch.rand(3, args.size, args.size), torch.rand(3, args.size - 32, args.size + 32)]
    targets = [{"labels": torch.tensor([1, 4]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
               {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]])}]
    print(f"| {'variant':<26} | {'loss':>6} | {'iRPE grad':>9} | {'params':>8} | {'iRPE params':>11} | {'step s':>6} |")
    print("|" + "|".join("-" * (w + 2) for w in (26, 6, 9, 8, 11, 6)) + "|")
    for spec in VARIANTS:
        model, criterion, _ = build_model(load_config(None, SMALL + [f"model.irpe={spec}"]))
        model.train()
        t0 = time.perf_counter()
        losses = criterion(model(images), targets)
        loss = sum(losses[k] * w for k, w in criterion.weight_dict.items())
        loss.backward()
        dt = time.perf_counter() - t0
        tables = [p for n, p in model.named_parameters() if "lookup_table" in n]
        grad = sum(float(p.grad.abs().sum()) for p in tables) if tables else float("nan")
        n_all = sum(p.numel() for p in model.parameters())
        n_rpe = sum(p.numel() for p in tables)
        print(f"| {spec or 'no iRPE':<26} | {loss.item():6.3f} | {grad:9.3g} | {n_all:8d} | {n_rpe:11d} | {dt:6.2f} |")
        if not torch.isfinite(loss):
            print(f"non-finite loss for {spec or 'no iRPE'}", file=sys.stderr)
            return 1
    return 0
