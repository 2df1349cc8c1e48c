"""Launch paths: submitit (its local executor), evaluation of a reference-style checkpoint, and
the loaders' exact-resume properties."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from engine_helpers import micro, tool_main

from detr_irpe.config import load_config
from detr_irpe.data.build import build_dataset, build_loader
from detr_irpe.models import build_model

evaluate_main = tool_main("evaluate")

ROOT = Path(__file__).resolve().parents[1]


def test_submitit_local_executor_runs_a_training_job(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "tools" / "submit.py"), "--executor", "local", "--job-dir", str(tmp_path / "jobs"),
           "--timeout-min", "10", "--wait"] + micro(tmp_path / "cache", out, "train.epochs=1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                                "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished with status 0" in proc.stdout
    assert (out / "checkpoint.pth").is_file() and len((out / "log.jsonl").read_text().splitlines()) == 1


def test_a_reference_checkpoint_is_evaluated_with_its_own_args(tmp_path):
    """A checkpoint as the reference code writes it ('model' + an argparse 'args'), no config file."""
    args = argparse.Namespace(backbone="resnet18", dilation=False, position_embedding="sine", hidden_dim=32, nheads=4,
                              enc_layers=1, dec_layers=1, dim_feedforward=64, dropout=0.1, num_queries=5,
                              pre_norm=False, aux_loss=True, enc_rpe2d="rpe-1.9-product-ctx-1-k", lr=1e-4,
                              batch_size=2, epochs=150, lr_drop=100, coco_path="/data/coco", masks=False)
    cfg = load_config(None, ["model.backbone.name=resnet18", "model.backbone.weights=none", "model.hidden_dim=32",
                             "model.nheads=4", "model.enc_layers=1", "model.dec_layers=1",
                             "model.dim_feedforward=64", "model.num_queries=5", "model.num_classes=91",
                             "model.irpe=rpe-1.9-product-ctx-1-k"])
    torch.manual_seed(0)
    model, _, _ = build_model(cfg)
    ckpt = tmp_path / "ref.pth"
    torch.save({"model": model.state_dict(), "optimizer": {}, "lr_scheduler": {}, "epoch": 149, "args": args}, ckpt)
    data = [o for o in micro(tmp_path / "cache", tmp_path / "x") if o.startswith("data.")]
    assert evaluate_main(["--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "ev"), "--batch-size", "1"] + data) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["irpe"] == "rpe-1.9-product-ctx-1-k" and m["eval_batch_size"] == 1 and m["images"] == 8
    assert len(json.loads((tmp_path / "ev" / "results.json").read_text())) == 8 * 5


def _keys(loader, epoch, skip=0):
    loader.batch_sampler.set_epoch(epoch, skip)
    return [[int(t["image_id"]) for t in targets] for _, _, targets in loader]


def test_batches_are_a_function_of_seed_and_epoch_and_can_start_anywhere(tmp_path):
    cfg = load_config(None, micro(tmp_path / "cache", tmp_path / "x", "data.aspect_ratio_grouping=true"))
    ds = build_dataset(cfg, "train")
    loader = build_loader(ds, cfg, train=True)
    e0, e1 = _keys(loader, 0), _keys(loader, 1)
    assert e0 == _keys(loader, 0) and e0 != e1
    assert _keys(loader, 1, skip=3) == e1[3:]
    assert all(len(b) == cfg.train.batch_size for b in e0) and len(e0) == len(ds) // cfg.train.batch_size
    plain = build_loader(ds, load_config(None, micro(tmp_path / "cache", tmp_path / "x")), train=True)
    ids = [i for b in _keys(plain, 0) for i in b]
    assert len(ids) == len(set(ids)) == len(ds)  # without grouping: every image once per epoch


def test_augmentation_does_not_depend_on_workers_or_order(tmp_path):
    over = micro(tmp_path / "cache", tmp_path / "x", "data.crop_prob=0.5", "data.scales=[48,64,80]")
    cfg = load_config(None, over)
    ds = build_dataset(cfg, "train")
    a = ds[(3, 5)]
    _ = ds[(3, 6)]
    b = ds[(3, 5)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    others = [ds[(e, 5)][0] for e in range(4, 10)]
    assert any(o.shape != a[0].shape or not torch.equal(o, a[0]) for o in others)  # other epochs, other draws
    cfg1 = load_config(None, over + ["data.num_workers=1"])
    l0, l1 = build_loader(ds, cfg, train=True), build_loader(build_dataset(cfg1, "train"), cfg1, train=True)
    for loader in (l0, l1):
        loader.batch_sampler.set_epoch(2)
    for (i0, m0, t0), (i1, m1, t1) in zip(l0, l1):
        assert torch.equal(i0, i1) and torch.equal(m0, m1)
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(t0, t1))
