"""Model EMA (engine/ema.py): the average follows RT-DETR's warmed-up decay, a run with
train.ema evaluates and keeps the EMA weights, resumes them exactly, and the model sources load
them by default (the raw weights on request)."""

import json
import math

import pytest
import torch
from engine_helpers import micro, run_tool, same_weights, tool_main, weights

from detr_irpe.config import load_config
from detr_irpe.engine.ema import ModelEMA
from detr_irpe.engine.hooks import Hook
from detr_irpe.engine.interrupt import TrainingInterrupted
from detr_irpe.engine.trainer import Trainer, default_hooks
from detr_irpe.hub.checkpoint import load_checkpoint

EMA = ["train.ema=true", "train.ema_decay=0.9", "train.ema_warmup=3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def test_the_average_follows_the_warmed_up_decay():
    model = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(model.weight)
    ema = ModelEMA(model, decay=0.9, warmup=3)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0], start=1):
        model.weight.data.fill_(value)
        ema.update(model)
        d = 0.9 * (1 - math.exp(-n / 3))
        expected = d * expected + (1 - d) * value
    assert ema.updates == 3
    assert ema.module.weight[0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_a_run_with_ema_evaluates_and_saves_the_average_and_the_sources_load_it(cache, tmp_path):
    out = tmp_path / "run"
    assert tool_main("train")(micro(cache, out, *EMA, "train.eval_raw=true")) == 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert all("AP" in r and "raw_AP" in r for r in log)
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["ema"]["updates"] == log[-1]["updates"] == 6
    assert not same_weights(ckpt["ema"]["model"], ckpt["model"])
    evaluate = tool_main("evaluate")
    assert run_tool(evaluate, ["--checkpoint", out / "checkpoint.pth", "--output-dir", tmp_path / "ema"]) == 0
    assert run_tool(evaluate, ["--checkpoint", out / "checkpoint.pth", "--output-dir", tmp_path / "raw",
                               "--raw-weights"]) == 0
    ema_ap = json.loads((tmp_path / "ema" / "metrics.json").read_text())["metrics"]["AP"]
    raw_ap = json.loads((tmp_path / "raw" / "metrics.json").read_text())["metrics"]["AP"]
    assert ema_ap == pytest.approx(log[-1]["AP"], abs=1e-9) and raw_ap == pytest.approx(log[-1]["raw_AP"], abs=1e-9)


class _StopAfter(Hook):
    def after_step(self, trainer, scalars):
        if trainer.progress.update == 4:
            trainer.stop_signals.request(15)


def test_a_run_with_ema_resumes_mid_epoch_exactly(cache, tmp_path):
    straight = tmp_path / "straight"
    assert tool_main("train")(micro(cache, straight, *EMA)) == 0
    out = tmp_path / "stopped"
    trainer = Trainer(load_config(None, micro(cache, out, *EMA)))
    trainer.hooks = default_hooks(trainer) + [_StopAfter()]
    with pytest.raises(TrainingInterrupted):
        trainer.train()
    assert tool_main("train")(micro(cache, out, *EMA) + ["--resume", "auto"]) == 0
    assert same_weights(weights(straight / "checkpoint.pth"), weights(out / "checkpoint.pth"))
    a, b = load_checkpoint(straight / "checkpoint.pth")["ema"], load_checkpoint(out / "checkpoint.pth")["ema"]
    assert a["updates"] == b["updates"] and same_weights(a["model"], b["model"])


def test_turning_ema_on_when_resuming_is_refused(cache, tmp_path, capsys):
    from reliability_helpers import expect_error

    out = tmp_path / "run"
    assert tool_main("train")(micro(cache, out, "train.epochs=1")) == 0
    expect_error(capsys, tool_main("train"), micro(cache, out, "train.epochs=2", *EMA) + ["--resume", "auto"],
                 "train.ema=True differs from the run's train.ema=False", "--init-from")
