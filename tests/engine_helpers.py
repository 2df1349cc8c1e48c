"""Shared set-up of the engine tests: a micro config on a tiny synthetic dataset."""

from pathlib import Path

import torch

from detr_irpe.hub.checkpoint import load_checkpoint

MICRO = [
    "data.dataset=synthetic", "data.synthetic.num_train=32", "data.synthetic.num_val=8",
    "data.synthetic.image_size=[64,80]", "data.synthetic.max_objects=2", "data.scales=[64]", "data.max_size=96",
    "data.val_size=64", "data.crop_prob=0.0", "data.size_divisibility=32", "data.num_workers=0",
    "model.backbone.name=cnn_tiny", "model.backbone.width=8", "model.backbone.weights=none", "model.backbone.norm=bn",
    "model.backbone.trainable_layers=[stem,layer1,layer2,layer3,layer4]", "model.backbone.dilation=true",
    "model.hidden_dim=32", "model.nheads=4", "model.enc_layers=1", "model.dec_layers=1", "model.dim_feedforward=64",
    "model.num_queries=5", "model.num_classes=null", "model.dropout=0.1", "model.irpe=rpe-2.0-product-ctx-1-k",
    "train.batch_size=4", "train.epochs=2", "train.max_steps_per_epoch=3", "train.log_every=1", "train.lr=1e-4",
    "train.lr_backbone=1e-4", "eval.batch_size=4",
]


def micro(cache: Path, out: Path, *extra: str) -> list[str]:
    """Overrides of a micro training run into ``out`` with the dataset cached in ``cache``."""
    return MICRO + [f"data.synthetic.cache_dir={cache}", f"train.output_dir={out}", *extra]


def weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def tool_main(name: str):
    """The ``main`` of command ``name`` (``detr-irpe <name>``, also ``tools/<name>.py``)."""
    from detr_irpe.commands import command_module

    return command_module(name).main


def micro_checkpoints(root: Path, variants: dict) -> dict:
    """Checkpoints of micro models with random weights, ``variants``: name -> (irpe spec, seed,
    extra overrides); returns the root, the checkpoint paths and the synthetic dataset folder."""
    from detr_irpe.hub.checkpoint import save_checkpoint
    from detr_irpe.config import config_to_dict, load_config
    from detr_irpe.data.synthetic import ensure_synthetic
    from detr_irpe.models import build_model

    cache = root / "synthetic"
    ckpts = {}
    for name, (irpe, seed, extra) in variants.items():
        cfg = load_config(None, micro(cache, root / "run", f"model.irpe={irpe}", "model.num_classes=5", *extra))
        torch.manual_seed(seed)
        model, _, _ = build_model(cfg)
        ckpts[name] = root / f"{name}.pth"
        save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg)}, ckpts[name])
    return {"root": root, "ckpt": ckpts, "data": ensure_synthetic(cfg.data.synthetic, progress=False)}


def abs_and_irpe_checkpoints(root: Path) -> dict:
    """micro_checkpoints of two models, "abs" (absolute position encoding only) and "irpe"
    (rpe-2.0-product-ctx-1-k), as the prediction and export tests use them."""
    return micro_checkpoints(root, {"abs": ("", 0, ()), "irpe": ("rpe-2.0-product-ctx-1-k", 1, ())})


def run_tool(main, argv) -> int:
    """``main`` through the command-line wrapper (status 2 for user errors), ``argv`` as strings."""
    from detr_irpe.commands.cli import run_main

    return run_main(main, [str(a) for a in argv])
