"""Two gloo processes decide together: a non-finite loss or a stop signal seen by one process only
ends (or skips) the same step on both within seconds, not at the collective timeout."""

import json
import signal
import time

import pytest
from distributed_helpers import run_processes
from engine_helpers import micro

from detr_irpe.core.io import atomic_write_json

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


#: a peer that hung would wait this long in a collective; every test ends far sooner
TIMEOUT = "train.dist_timeout_s=60"


def _nan_on(trainer, rank, call):
    """Make the box loss of process ``rank`` NaN at its ``call``-th loss."""
    real = trainer.criterion.forward
    calls = {"n": 0}

    def forward(outputs, targets, **kwargs):
        losses = real(outputs, targets, **kwargs)
        calls["n"] += 1
        if trainer.dist.rank == rank and calls["n"] == call:
            losses["loss_bbox"] = losses["loss_bbox"] * float("nan")
        return losses

    trainer.criterion.forward = forward


def _train_with_nan(rank, overrides, result):
    from detr_irpe.config import load_config
    from detr_irpe.core.runtime import cleanup
    from detr_irpe.engine.trainer import Trainer

    start = time.time()
    trainer = Trainer(load_config(None, overrides))
    _nan_on(trainer, rank=1, call=2)
    try:
        trainer.train()
        outcome = "finished"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    atomic_write_json(result / f"rank{rank}.json", {
        "outcome": outcome, "seconds": time.time() - start, "skipped": trainer.progress.skipped_steps,
        "weights": {k: v.sum().item() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}})
    cleanup()


def _two_processes(fn, overrides, result) -> list[dict]:
    """What each of two processes running ``fn`` reported, by rank."""
    run_processes(2, fn, overrides, result, timeout=120)
    return [json.loads((result / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_a_nan_on_one_process_stops_every_process_at_that_step(tmp_path, cache):
    out = tmp_path / "run"
    ranks = _two_processes(_train_with_nan, micro(cache, out, TIMEOUT), tmp_path)
    for r in ranks:
        assert r["seconds"] < 45, r["seconds"]  # not at the collective timeout
        assert r["outcome"].startswith("NonFiniteLossError: non-finite loss at epoch 1, step 2 (update 1): "
                                       "rank 1: loss_bbox=nan"), r["outcome"]
        assert "checkpoint_nonfinite.pth" in r["outcome"]
    from detr_irpe.hub.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoint_nonfinite.pth")
    assert state["epoch"] == 0 and state["step_in_epoch"] == 1 and state["world_size"] == 2


def test_a_nan_on_one_process_skips_the_step_on_every_process(tmp_path, cache):
    out = tmp_path / "run"
    ranks = _two_processes(_train_with_nan, micro(cache, out, TIMEOUT, "train.on_nonfinite=skip"), tmp_path)
    assert [r["outcome"] for r in ranks] == ["finished", "finished"]
    assert [r["skipped"] for r in ranks] == [1, 1]
    assert ranks[0]["weights"].keys() == ranks[1]["weights"].keys()
    params = [k for k in ranks[0]["weights"] if not k.endswith(("running_mean", "running_var"))]
    assert all(ranks[0]["weights"][k] == ranks[1]["weights"][k] for k in params)  # the same updates
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped_steps"] == 1 and log[-1]["updates"] == 5


def _train_with_signal(rank, overrides, result):
    from detr_irpe.config import load_config
    from detr_irpe.core.runtime import cleanup
    from detr_irpe.engine.hooks import Hook
    from detr_irpe.engine.interrupt import TrainingInterrupted
    from detr_irpe.engine.trainer import Trainer, default_hooks

    class SignalRankOne(Hook):
        def after_step(self, trainer, scalars):
            if trainer.dist.rank == 1 and trainer.progress.update == 2:
                trainer.stop_signals.request(signal.SIGTERM)  # as the handler does for a real signal

    start = time.time()
    trainer = Trainer(load_config(None, overrides))
    trainer.hooks = default_hooks(trainer) + [SignalRankOne()]
    try:
        trainer.train()
        outcome = "finished"
    except TrainingInterrupted as exc:
        outcome = f"interrupted: {exc}"
    atomic_write_json(result / f"rank{rank}.json", {"outcome": outcome, "seconds": time.time() - start,
                                                    "step": trainer.progress.step_in_epoch,
                                                    "update": trainer.progress.update})
    cleanup()


def test_a_stop_signal_to_one_process_stops_every_process_at_the_same_step(tmp_path, cache):
    out = tmp_path / "run"
    ranks = _two_processes(_train_with_signal, micro(cache, out, TIMEOUT), tmp_path)
    for r in ranks:
        assert r["seconds"] < 45, r["seconds"]
        assert r["outcome"].startswith("interrupted: stopped by "), r["outcome"]
        assert "(on rank 1) at epoch 1, step 2" in r["outcome"], r["outcome"]
    assert ranks[0]["step"] == ranks[1]["step"] == 2 and ranks[0]["update"] == ranks[1]["update"] == 2
    assert "SIGTERM (on rank 1)" in ranks[1]["outcome"]
    from detr_irpe.hub.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoint_interrupted.pth")
    assert state["epoch"] == 0 and state["step_in_epoch"] == 2
