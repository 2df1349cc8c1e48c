"""Monitoring a run: the step monitor's figures follow its clock, the log line carries them into
train.log, warnings during an epoch go through the progress-bar-safe console, and the optional
W&B and MLflow writers (fakes here) receive the config and the scalars, imported only when chosen."""

import logging
import re
import sys
import types
import warnings

import pytest
from engine_helpers import micro

from detr_irpe.commands.cli import run_main
from detr_irpe.commands.train import main as train_main
from detr_irpe.config import ConfigError, load_config
from detr_irpe.engine.monitor import StepMonitor, console_for_progress_bars, duration, peak_memory_mib, step_line


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_step_monitor_figures_follow_its_clock():
    clock = Clock()
    m = StepMonitor(steps_in_epoch=10, start_step=2, steps_after_epoch=20, clock=clock)
    for _ in range(4):  # 4 steps of 0.5 s waiting for data and 1.5 s computing
        clock.now += 0.5
        m.data_ready()
        clock.now += 1.5
        m.step_done(8)
    s = m.scalars()
    assert s["images_per_s"] == pytest.approx(32 / 8.0)
    assert s["data_s"] == pytest.approx(0.5) and s["step_s"] == pytest.approx(2.0)
    assert s["eta_epoch_s"] == pytest.approx(4 * 2.0)  # steps 6..9 left
    assert s["eta_run_s"] == pytest.approx(24 * 2.0)
    assert s["peak_memory_mib"] > 0
    clock.now += 10  # the next interval starts where this one ended
    m.data_ready()
    m.step_done(8)
    assert m.scalars()["data_s"] == pytest.approx(10)


def test_step_line_names_every_figure():
    line = step_line(2, 5, 40, 250, 290, {"loss": 1.5, "lr": 1e-4, "images_per_s": 12.5, "data_s": 0.02,
                                         "step_s": 0.6, "eta_epoch_s": 125, "eta_run_s": 3725, "peak_memory_mib": 900})
    assert line.startswith("epoch 2/5 step 40/250 (iteration 290): loss 1.5000")
    for part in ("12.5 img/s", "data 20 ms/step", "step 600 ms", "ETA epoch 2m05s", "run 1h02m", "peak 900 MiB"):
        assert part in line
    assert duration(42) == "42s" and peak_memory_mib() > 0


def test_warnings_in_an_epoch_go_through_the_progress_bar_console():
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    seen = []
    collect = logging.Handler()
    collect.emit = seen.append
    root.addHandler(console)
    root.addHandler(collect)
    try:
        with console_for_progress_bars():
            assert console not in root.handlers  # replaced by tqdm's writer while inside
            warnings.warn("something odd in this batch")
        assert console in root.handlers
    finally:
        root.removeHandler(console)
        root.removeHandler(collect)
    assert any("something odd in this batch" in r.getMessage() for r in seen)


def _fake_packages(monkeypatch):
    calls = []
    run = types.SimpleNamespace(log=lambda data, step: calls.append(("wandb.log", data, step)),
                                finish=lambda: calls.append(("wandb.finish",)))
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: calls.append(("wandb.init", kw)) or run
    mlflow = types.ModuleType("mlflow")
    mlflow.set_experiment = lambda name: calls.append(("mlflow.set_experiment", name))
    mlflow.start_run = lambda run_name: calls.append(("mlflow.start_run", run_name))
    mlflow.log_params = lambda params: calls.append(("mlflow.log_params", params))
    mlflow.log_metrics = lambda metrics, step: calls.append(("mlflow.log_metrics", metrics, step))
    mlflow.end_run = lambda: calls.append(("mlflow.end_run",))
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    return calls


def test_wandb_and_mlflow_writers_get_config_and_scalars(tmp_path, monkeypatch):
    calls = _fake_packages(monkeypatch)
    out = tmp_path / "run"
    argv = micro(tmp_path / "cache", out, "train.epochs=1", "train.writers=[wandb,mlflow]", "train.experiment=study")
    assert train_main(argv) == 0
    names = [c[0] for c in calls]
    assert names[0] == "wandb.init" and calls[0][1]["project"] == "study" and calls[0][1]["name"] == "run"
    assert calls[0][1]["config"]["train"]["writers"] == ["wandb", "mlflow"]
    assert ("mlflow.set_experiment", "study") in calls and ("mlflow.start_run", "run") in calls
    params = next(c[1] for c in calls if c[0] == "mlflow.log_params")
    assert params["train.epochs"] == "1"
    steps = [c for c in calls if c[0] == "wandb.log"]
    assert [c[2] for c in steps] == [1, 2, 3, 3]  # three log intervals, then the epoch, at the update counter
    assert {"train/loss", "train/images_per_s", "train/eta_run_s"} <= set(steps[0][1])
    # every writer sees the interval's figures (4 images a step take far less than 4 s)
    assert all(c[1]["train/images_per_s"] > 1 and c[1]["train/step_s"] > 1e-3 for c in steps[:3])
    assert "epoch/AP" in steps[-1][1]
    assert any(c[0] == "mlflow.log_metrics" and "epoch_AP" in c[1] for c in calls)
    assert set(names[-2:]) == {"wandb.finish", "mlflow.end_run"}
    assert not (out / "tensorboard").exists()  # not chosen
    log = (out / "train.log").read_text()
    assert "(iteration 3)" in log and "ETA epoch" in log and "peak" in log
    assert all(float(v) > 1 for v in re.findall(r"\| ([\d.]+) img/s data", log))


def test_a_writer_that_is_not_installed_stops_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    out = tmp_path / "run"
    assert run_main(train_main, micro(tmp_path / "cache", out, "train.writers=[mlflow]")) == 2
    assert not out.exists()


def test_unknown_writer_is_a_config_error():
    with pytest.raises(ConfigError, match="train.writers must be one of tensorboard, wandb, mlflow; got 'wanbd'"):
        load_config(None, ["train.writers=[wanbd]"])
