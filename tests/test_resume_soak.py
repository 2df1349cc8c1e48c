"""Faults under repetition, as a preemptible cluster delivers them: a training run killed with
SIGKILL 20 times at random moments (during steps, evaluation and checkpoint writes) and resumed
with ``--resume auto`` each time ends bitwise equal to a run never stopped, with every epoch in
log.jsonl and every step in TensorBoard exactly once; stopped with SIGTERM several times, no step
is lost or done twice (the update counter, the TensorBoard points and an uninterrupted run agree)."""

import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from engine_helpers import micro, same_weights, weights

from detr_irpe.hub.checkpoint import load_checkpoint
from detr_irpe.commands.train import main as train_main
from detr_irpe.config import load_config
from detr_irpe.data.synthetic import ensure_synthetic

ROOT = Path(__file__).resolve().parents[1]
KILLS = 20
TERMS = 5
STEPS = 3  # batches per epoch
#: a feed-forward layer wide enough that a checkpoint write takes long enough to be caught; model
#: EMA on, so that its average and update count are resumed exactly too (its AP is the logged one)
SOAK = ["train.eval_every=1", f"train.max_steps_per_epoch={STEPS}", "data.synthetic.num_val=16",
        "model.dim_feedforward=2048", "train.ema=true", "train.ema_decay=0.99", "train.ema_warmup=5"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("synthetic")
    ensure_synthetic(load_config(None, micro(cache, Path("/unused"), *SOAK)).data.synthetic, progress=False)
    return cache


class Life:
    """One training process (tools/train.py --resume auto) whose output is read as it comes."""

    def __init__(self, args):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "tools/train.py", *args, "--resume", "auto"], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def wait(self, condition, timeout: float = 120.0) -> None:
        """Poll ``condition()`` (about every half millisecond) until it holds; fail if the process
        ends first or the time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.reader.join(5)
                pytest.fail(f"training ended (status {self.proc.poll()}) or timed out before the moment to stop "
                            f"it:\n{''.join(self.lines[-30:])}")
            time.sleep(0.0005)

    def seen(self, pattern: str, start: int = 0) -> bool:
        return any(re.search(pattern, line) for line in self.lines[start:])

    def send(self, sig: int) -> int:
        self.proc.send_signal(sig)
        status = self.proc.wait(120)
        self.reader.join(10)
        return status


def step_line(k: int) -> str:
    """The console line of step ``k`` of an epoch (logged once per step without a terminal)."""
    return rf" step {k}/{STEPS}\b"


def committed(out: Path, before):
    """A condition: checkpoint.pth has been replaced since ``before`` (its (inode, mtime))."""
    return lambda: _identity(out / "checkpoint.pth") not in (None, before)


def _identity(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _temporaries(out: Path) -> list[str]:
    return [e.name for e in os.scandir(out) if e.name.startswith(".checkpoint") and e.name.endswith(".tmp")] \
        if out.is_dir() else []


def _stop_at(life: Life, out: Path, phase: str, rng: random.Random, sig: int) -> tuple[int, bool]:
    """Send ``sig`` at a random moment of ``phase`` ("step", "eval" or "checkpoint") of the epoch
    after one this life has committed; returns the exit status and whether the signal landed in
    the phase (the evaluation had not finished; the temporary file was still there)."""
    life.wait(committed(out, _identity(out / "checkpoint.pth")))
    mark = len(life.lines)
    if phase == "step":
        life.wait(lambda: life.seen(step_line(rng.randint(1, STEPS - 1)), mark))
        time.sleep(rng.uniform(0.0, 0.03))
        return life.send(sig), True
    if phase == "eval":
        life.wait(lambda: life.seen(step_line(STEPS), mark))  # the last step: evaluation follows
        time.sleep(rng.uniform(0.0, 0.02))
        status = life.send(sig)
        last_step = max(i for i, line in enumerate(life.lines) if re.search(step_line(STEPS), line))
        return status, not life.seen("COCO bbox", last_step)
    life.wait(lambda: bool(_temporaries(out)))
    status = life.send(sig)
    return status, bool(_temporaries(out))


def _events(folder: Path, tag: str, purged: bool = True) -> list[tuple[int, float]]:
    """``(step, value)`` of a TensorBoard tag: as TensorBoard shows it (purges applied), or every
    point written, in file order."""
    if purged:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        return [(s.step, s.value) for s in acc.Scalars(tag)]
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    return [(ev.step, v.simple_value) for f in sorted(glob.glob(str(folder / "events.out.tfevents.*")))
            for ev in LegacyEventFileLoader(f).Load() for v in ev.summary.value if v.tag == tag]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _reference(cache, tmp_path, epochs: int) -> Path:
    ref = tmp_path / "uninterrupted"
    assert train_main(micro(cache, ref, f"train.epochs={epochs}", *SOAK)) == 0
    return ref


def _assert_same_run(out: Path, ref: Path, epochs: int) -> None:
    """Weights bitwise equal, every epoch logged once with the same losses, every step in
    TensorBoard once with the same values, the update counter at epochs x steps."""
    assert same_weights(weights(out / "checkpoint.pth"), weights(ref / "checkpoint.pth"))
    state, ref_state = load_checkpoint(out / "checkpoint.pth"), load_checkpoint(ref / "checkpoint.pth")
    assert state["scheduler"]["update"] == state["ema"]["updates"] == epochs * STEPS
    assert same_weights(state["ema"]["model"], ref_state["ema"]["model"])
    log, ref_log = _log(out), _log(ref)
    assert [r["epoch"] for r in log] == list(range(1, epochs + 1))
    assert [(r["train_loss"], r["AP"], r["updates"]) for r in log] == [(r["train_loss"], r["AP"], r["updates"])
                                                                      for r in ref_log]
    shown = _events(out / "tensorboard", "train/loss")
    assert [step for step, _ in shown] == list(range(1, epochs * STEPS + 1))
    assert shown == _events(ref / "tensorboard", "train/loss")
    assert _events(out / "tensorboard", "eval/AP") == _events(ref / "tensorboard", "eval/AP")


def test_twenty_sigkills_at_random_moments_end_bitwise_equal_to_an_uninterrupted_run(cache, tmp_path):
    epochs = 2 * KILLS + 2  # a life loses at most the epoch it was killed in, and gains at most two
    out = tmp_path / "killed"
    args = micro(cache, out, f"train.epochs={epochs}", *SOAK)
    rng = random.Random(12)
    phases = ["step", "eval", "checkpoint"] * (KILLS // 3 + 1)
    rng.shuffle(phases)
    landed = {"step": 0, "eval": 0, "checkpoint": 0}

    # the first life is killed before it commits anything: the next one starts from scratch
    life = Life(args)
    life.wait(lambda: life.seen(r"epoch 1\b.*" + step_line(1)))
    assert life.send(signal.SIGKILL) == -signal.SIGKILL and not (out / "checkpoint.pth").exists()
    for phase in phases[: KILLS - 1]:
        life = Life(args)
        status, in_phase = _stop_at(life, out, phase, rng, signal.SIGKILL)
        assert status == -signal.SIGKILL, "".join(life.lines[-20:])
        landed[phase] += in_phase
    # kills landed where they were aimed: mid-write (the temporary left behind) and mid-evaluation
    assert landed["checkpoint"] >= 1 and landed["eval"] >= 1, landed

    done = Life(args)
    assert done.proc.wait(300) == 0, "".join(done.lines[-30:])
    done.reader.join(10)
    _assert_same_run(out, _reference(cache, tmp_path, epochs), epochs)
    assert not _temporaries(out)  # the killed writers' partial files were removed


def test_sigterm_at_random_moments_loses_and_repeats_no_step(cache, tmp_path):
    epochs = 2 * TERMS + 2  # a life gains one to two epochs
    out = tmp_path / "stopped"
    args = micro(cache, out, f"train.epochs={epochs}", *SOAK)
    rng = random.Random(3)
    for i, phase in enumerate(["step", "eval", "checkpoint", "step", "eval"][:TERMS]):
        life = Life(args)
        status, _ = _stop_at(life, out, phase, rng, signal.SIGTERM)
        assert status == 3 and life.seen("state saved to"), "".join(life.lines[-20:])
        saved = load_checkpoint(out / "checkpoint_interrupted.pth")
        # the TensorBoard points written so far end exactly at the saved update counter
        written = [step for step, _ in _events(out / "tensorboard", "train/loss", purged=False)]
        assert written == list(range(1, saved["scheduler"]["update"] + 1)), (i, phase)
    done = Life(args)
    assert done.proc.wait(300) == 0, "".join(done.lines[-30:])
    done.reader.join(10)
    # no point was written twice, not even one TensorBoard would purge
    written = [step for step, _ in _events(out / "tensorboard", "train/loss", purged=False)]
    assert written == list(range(1, epochs * STEPS + 1))
    _assert_same_run(out, _reference(cache, tmp_path, epochs), epochs)
