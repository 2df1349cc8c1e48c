"""A training run's output folder: the one place that names its files and decides which
checkpoint resumes it, whether it is finished, and how its epoch log is read."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..hub.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedProgress:
    """How far a checkpoint is into training: the epoch in progress and the batches of it done."""

    epoch: int
    step_in_epoch: int = 0
    #: the run ended by early stopping: finished before its last epoch
    stopped_early: bool = False

    @property
    def finished_epochs(self) -> int:
        return self.epoch if self.step_in_epoch == 0 else self.epoch - 1


class RunFolder:
    """The files of one run folder. The checkpoints a run resumes from are the one written after
    every epoch and the one a stop signal writes mid-epoch; ``checkpoint_best.pth`` and
    ``checkpoint_nonfinite.pth`` are never resumed from."""

    CONFIG = "config.yaml"
    TRAIN_LOG = "train.log"
    EPOCH_LOG = "log.jsonl"
    RUN_INFO = "run_info.json"
    TENSORBOARD = "tensorboard"
    CONSOLE_LOG = "console.log"
    CHECKPOINT = "checkpoint.pth"
    INTERRUPTED = "checkpoint_interrupted.pth"
    BEST = "checkpoint_best.pth"
    NONFINITE = "checkpoint_nonfinite.pth"
    RESUMABLE = (CHECKPOINT, INTERRUPTED)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def holds_run(self) -> bool:
        """Whether a run has committed progress here (a checkpoint it would resume from)."""
        return any((self.path / name).is_file() for name in self.RESUMABLE)

    def resume_checkpoint(self) -> tuple[Path, SavedProgress] | None:
        """The checkpoint that is furthest into training (epoch, then step within it) and loads,
        with its progress; None when there is none. Progress, not modification time, decides: a
        run killed between writing one checkpoint and removing a stale one leaves both."""
        found = []
        for path in (self.path / name for name in self.RESUMABLE):
            progress = read_progress(path)
            if progress is not None:
                found.append(((progress.epoch, progress.step_in_epoch, path.stat().st_mtime_ns), path, progress))
        if not found:
            return None
        _, path, progress = max(found)
        return path, progress

    def state(self, epochs: int) -> str:
        """``done`` (its resume checkpoint has committed ``epochs`` epochs, or early stopping ended
        it), ``partial`` (a checkpoint to resume from) or ``new``."""
        found = self.resume_checkpoint()
        if found is None:
            return "new"
        progress = found[1]
        return "done" if progress.finished_epochs >= epochs or progress.stopped_early else "partial"

    def read_log(self) -> list[dict]:
        """The epoch records of ``log.jsonl``. A line that is not one JSON record (torn by a
        kill, or bytes damaged on disk) is left out with a warning naming the file and line."""
        path = self.path / self.EPOCH_LOG
        if not path.is_file():
            return []
        records = []
        lines = path.read_bytes().splitlines()
        for number, raw in enumerate(lines, 1):
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif raw.strip() and number < len(lines):  # a last line may be one being written
                log.warning("%s, line %d: not a JSON record (a torn or damaged line); left out", path, number)
        return records


def read_progress(path: Path) -> SavedProgress | None:
    """The progress stored in a training checkpoint; None where the file is missing, does not load
    or holds weights only."""
    if not path.is_file():
        return None
    try:
        ckpt = load_checkpoint(path, mmap=True)
    except CheckpointError:
        return None
    if "epoch" not in ckpt or "optimizer" not in ckpt:
        return None
    return SavedProgress(int(ckpt["epoch"]), int(ckpt.get("step_in_epoch", 0)), bool(ckpt.get("stopped_early")))
