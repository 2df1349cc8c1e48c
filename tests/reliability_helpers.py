"""Shared checks of the reliability tests: bad input makes a tool exit with status 2 and one line
`error: ...` naming the file, field or value, without a traceback, and leaves the output folder
as it was."""

import hashlib
from pathlib import Path

from detr_irpe.commands.cli import run_main


def snapshot(folder: Path) -> dict:
    """Every file below ``folder`` (relative path) with the SHA-1 of its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def expect_error(capsys, main, argv, *words, out: Path | None = None):
    """``main(argv)`` through run_main: status 2, last stderr line `error: ...` with ``words``, no
    traceback, and ``out`` unchanged."""
    before = snapshot(out) if out else None
    capsys.readouterr()
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in err, err[-2000:]
    for w in words:
        assert w in line, line
    if out is not None:
        assert snapshot(out) == before
    return line


def existing_run(tmp_path) -> Path:
    """An output folder with something in it that must survive."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    return out
