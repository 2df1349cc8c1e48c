"""Faults: no checkpoint is ever lost or half-written, interrupted runs save their state and resume,
non-finite losses stop (or skip) clearly, a dead peer does not hang the others, a full disk is
reported and the previous files stay intact."""

import errno
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from distributed_helpers import run_processes
from engine_helpers import micro
from reliability_helpers import expect_error

from detr_irpe.hub.checkpoint import load_checkpoint, save_checkpoint
from detr_irpe.commands.train import main as train_main
from detr_irpe.config import load_config
from detr_irpe.engine.trainer import NonFiniteLossError, Trainer
from detr_irpe.core.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def _writer(path, start):
    i = start
    while True:
        save_checkpoint({"model": {"w": torch.full((1_000_000,), float(i))}, "i": i}, path)
        i += 1


def test_checkpoints_survive_being_killed_mid_write_many_times(tmp_path):
    path = tmp_path / "checkpoint.pth"
    ctx = multiprocessing.get_context("fork")  # no re-import of torch per writer
    rng = random.Random(0)
    last = -1
    for attempt in range(25):
        proc = ctx.Process(target=_writer, args=(path, (last + 1) * 1000))
        proc.start()
        deadline = time.time() + 30
        while not path.exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        ckpt = load_checkpoint(path)  # always a whole checkpoint, never a torn one
        w = ckpt["model"]["w"]
        assert torch.equal(w, torch.full_like(w, float(ckpt["i"])))
        last = ckpt["i"] // 1000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "checkpoint.pth"]
    assert all(n.startswith(".checkpoint.pth.") for n in leftovers)  # only temporaries of killed writers


def test_sigterm_saves_the_state_and_resume_auto_continues(tmp_path, cache):
    out = tmp_path / "run"
    args = micro(cache, out, "train.epochs=30", "train.max_steps_per_epoch=null", "train.eval_every=1000")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        if re.search(r"epoch 2\b.* step 1/", line):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 3, rest[-2000:]
    assert "state saved to" in rest and (out / "checkpoint_interrupted.pth").is_file()
    state = load_checkpoint(out / "checkpoint_interrupted.pth")
    assert state["epoch"] == 1 and state["step_in_epoch"] >= 1
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), *args, "train.epochs=3", "--resume", "auto"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [json.loads(x)["epoch"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def _nan_after(trainer, n):
    real = trainer.criterion.forward
    calls = {"n": 0}

    def forward(outputs, targets, **kwargs):
        losses = real(outputs, targets, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            losses["loss_bbox"] = losses["loss_bbox"] * float("nan")
        return losses

    trainer.criterion.forward = forward


def test_a_non_finite_loss_stops_with_the_step_and_terms_named_after_saving_the_state(tmp_path, cache):
    out = tmp_path / "run"
    trainer = Trainer(load_config(None, micro(cache, out)))
    _nan_after(trainer, 2)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2 \(update 1\): loss_bbox=nan.*checkpoint_nonfinite.pth"):
        trainer.train()
    state = load_checkpoint(out / "checkpoint_nonfinite.pth")
    assert state["epoch"] == 0 and state["step_in_epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_on_nonfinite_skip_skips_the_step_and_counts_it(tmp_path, cache):
    out = tmp_path / "run"
    trainer = Trainer(load_config(None, micro(cache, out, "train.on_nonfinite=skip")))
    _nan_after(trainer, 2)
    trainer.train()
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped_steps"] == 1 and log[-1]["updates"] == 5


def test_disk_full_while_checkpointing_is_reported_and_the_previous_checkpoint_is_intact(tmp_path, cache, monkeypatch, capsys):
    out = tmp_path / "run"
    assert train_main(micro(cache, out, "train.epochs=1")) == 0
    before = (out / "checkpoint.pth").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    line = expect_error(capsys, train_main, micro(cache, out, "train.epochs=2") + ["--resume", "auto"],
                        "no space left on the device while writing", "checkpoint.pth", "previous file is intact")
    monkeypatch.setattr(torch, "save", real_save)
    assert (out / "checkpoint.pth").read_bytes() == before
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    del line


def _peer_death(rank, overrides, result):
    from detr_irpe.engine.hooks import Hook
    from detr_irpe.engine.trainer import default_hooks

    class Die(Hook):
        def after_step(self, trainer, scalars):
            if rank == 1 and trainer.progress.update == 2:
                os._exit(1)

    # the launcher terminates the survivor once it sees the peer die: the survivor must still
    # report how it failed (the trainer's own SIGTERM handler covers training only)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    start = time.time()
    try:
        trainer = Trainer(load_config(None, overrides))
        trainer.hooks = default_hooks(trainer) + [Die()]
        trainer.train()
        outcome = "finished"
    except Exception as exc:  # the survivor must fail, not hang
        outcome = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    atomic_write_json(result / f"rank{rank}.json", {"outcome": outcome, "seconds": time.time() - start})


def test_a_dead_peer_makes_the_others_fail_within_the_timeout(tmp_path, cache):
    overrides = micro(cache, tmp_path / "run", "train.dist_timeout_s=20", "train.epochs=3")
    run_processes(2, _peer_death, overrides, tmp_path, timeout=150, allow_failure=True)
    survivor = json.loads((tmp_path / "rank0.json").read_text())
    assert survivor["seconds"] < 120, survivor
    # the survivor fails with gloo's lost-peer or timeout error from the process group, not another error
    assert re.match(r"(RuntimeError|DistBackendError|DistNetworkError): .*gloo.*"
                    r"(Connection (reset|closed) by peer|[Tt]imed out|timeout)", survivor["outcome"]), survivor
    assert not (tmp_path / "rank1.json").exists()
