"""Bugs are not user errors: only a UserError becomes one line `error: ...` and status 2; any other
exception keeps its traceback and status 1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import micro

from detr_irpe.commands.cli import run_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def _boom(argv=None):
    raise KeyError("boom")


def test_run_main_turns_only_user_errors_into_one_line(capsys):
    from detr_irpe.core.errors import UserError

    def user_error(argv=None):
        raise UserError("something the user can fix")

    assert run_main(user_error, []) == 2
    assert capsys.readouterr().err == "error: something the user can fix\n"
    with pytest.raises(KeyError, match="boom"):  # a bug keeps its traceback
        run_main(_boom, [])
    for builtin in (ValueError("v"), FileNotFoundError("f"), RuntimeError("r")):  # no longer taken for user errors
        def fail(argv=None, exc=builtin):
            raise exc
        with pytest.raises(type(builtin)):
            run_main(fail, [])


def _run_train(args: list[str], patch: str = "") -> subprocess.CompletedProcess:
    """tools/train.py in a fresh interpreter, after ``patch`` (Python) has run there."""
    code = "\n".join(["import runpy, sys", f"sys.argv = ['tools/train.py', *{args!r}]", patch,
                      "runpy.run_path('tools/train.py', run_name='__main__')"])
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_user_error_is_one_line_and_status_2_a_bug_is_a_traceback_and_status_1(tmp_path, cache):
    user = _run_train(micro(cache, tmp_path / "a", "model.num_queries=0"))
    assert user.returncode == 2 and "Traceback" not in user.stderr, user.stderr[-2000:]
    last = user.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "model.num_queries must be > 0" in last
    bug = _run_train(micro(cache, tmp_path / "b"), patch="\n".join([
        "import detr_irpe.data.build as build",
        "def build_dataset(*args, **kwargs):",
        "    raise KeyError('a bug in the loader')",
        "build.build_dataset = build_dataset"]))
    assert bug.returncode == 1, bug.stderr[-2000:]
    assert "Traceback (most recent call last)" in bug.stderr and "KeyError: 'a bug in the loader'" in bug.stderr
    assert not any(line.startswith("error: ") for line in bug.stderr.splitlines())
