"""Bad checkpoints are refused with one line naming the file: truncated or foreign files, another
architecture (the mismatching keys listed), a file that would run code when loaded (refused
without running it)."""

import os
from pathlib import Path

import pytest
import torch
from engine_helpers import micro, tool_main
from reliability_helpers import existing_run, expect_error

from detr_irpe.commands.train import main as train_main

evaluate_main = tool_main("evaluate")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert train_main(micro(cache, out, "train.epochs=1")) == 0
    return out


def test_truncated_and_foreign_checkpoints_are_refused(trained, tmp_path, cache, capsys):
    data = (trained / "checkpoint.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 3])
    expect_error(capsys, evaluate_main, ["--checkpoint", str(cut)], "cut.pth", "truncated or not a checkpoint")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    expect_error(capsys, evaluate_main, ["--checkpoint", str(text)], "notes.pth")
    out = existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + ["--resume", str(cut)], "cut.pth", out=out)


def test_a_checkpoint_of_another_architecture_lists_the_mismatching_keys(trained, tmp_path, cache, capsys):
    out = existing_run(tmp_path)
    line = expect_error(capsys, train_main, micro(cache, out, "model.hidden_dim=48") + ["--init-from", str(trained / "checkpoint.pth")],
                        "does not match the model architecture", "shape mismatch", out=out)
    assert "checkpoint (" in line and "vs model (" in line


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/detr_irpe_reliability_pwned",))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    marker = Path("/tmp/detr_irpe_reliability_pwned")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": {}, "x": _Payload()}, evil)
    expect_error(capsys, evaluate_main, ["--checkpoint", str(evil)], "refused", "nothing was executed", "system")
    assert not marker.exists()
