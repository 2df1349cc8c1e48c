"""engine/run_folder.py: the checkpoint that resumes a run is decided by progress among the resumable
checkpoints only, a run's state follows from it, and a damaged log line is left out, not fatal."""

import logging

import torch

from detr_irpe.engine.run_folder import RunFolder
from detr_irpe.hub.checkpoint import save_checkpoint


def _checkpoint(path, epoch, step=0):
    save_checkpoint({"model": {"w": torch.zeros(1)}, "optimizer": {}, "epoch": epoch, "step_in_epoch": step}, path)


def test_the_resume_checkpoint_is_the_furthest_resumable_one(tmp_path):
    folder = RunFolder(tmp_path)
    _checkpoint(tmp_path / folder.INTERRUPTED, epoch=2, step=3)
    _checkpoint(tmp_path / folder.CHECKPOINT, epoch=2)
    # newer files that are never resumed from: the best epoch's weights and a non-finite state
    _checkpoint(tmp_path / folder.BEST, epoch=9)
    _checkpoint(tmp_path / folder.NONFINITE, epoch=9, step=5)
    path, progress = folder.resume_checkpoint()
    assert path == tmp_path / folder.INTERRUPTED and (progress.epoch, progress.step_in_epoch) == (2, 3)


def test_a_damaged_checkpoint_is_not_resumed_from(tmp_path):
    folder = RunFolder(tmp_path)
    _checkpoint(tmp_path / folder.CHECKPOINT, epoch=1)
    (tmp_path / folder.INTERRUPTED).write_bytes(b"not a checkpoint")
    path, progress = folder.resume_checkpoint()
    assert path == tmp_path / folder.CHECKPOINT and progress.epoch == 1


def test_state_follows_the_resume_checkpoint(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.state(epochs=2) == "new"
    _checkpoint(tmp_path / folder.BEST, epoch=2)
    assert folder.state(epochs=2) == "new" and not folder.holds_run()  # weights of the best epoch only
    _checkpoint(tmp_path / folder.CHECKPOINT, epoch=1)
    assert folder.state(epochs=2) == "partial" and folder.holds_run()
    _checkpoint(tmp_path / folder.INTERRUPTED, epoch=2, step=1)  # inside the last epoch: not done
    assert folder.state(epochs=2) == "partial"
    _checkpoint(tmp_path / folder.CHECKPOINT, epoch=2)
    (tmp_path / folder.INTERRUPTED).unlink()
    assert folder.state(epochs=2) == "done" and folder.state(epochs=3) == "partial"


def test_a_damaged_log_line_is_left_out_with_a_warning_and_a_torn_last_line_quietly(tmp_path, caplog):
    folder = RunFolder(tmp_path)
    (tmp_path / folder.EPOCH_LOG).write_bytes(b'{"epoch": 1, "AP": 0.1}\n\xff\xfe\x00garbage\n{"epoch": 2, "AP": 0.2}\n'
                                              b'{"epoch": 3, "A')
    with caplog.at_level(logging.WARNING):
        records = folder.read_log()
    assert [r["epoch"] for r in records] == [1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "log.jsonl, line 2: not a JSON record" in warnings[0]
