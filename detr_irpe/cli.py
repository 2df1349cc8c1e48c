"""Shared command-line plumbing of the tools: logging set-up and one-line error reporting."""

from __future__ import annotations

import collections
import logging
import os
import sys


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(main: bool = True) -> None:
    """INFO on the main process, warnings elsewhere, to the console. Records are also held in
    memory until add_file_log names the run's log file (which does not exist before the run's
    input has been checked), so that the file holds them too."""
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, format=_FORMAT, datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stderr), _EarlyRecords()], force=True)


class _EarlyRecords(logging.Handler):
    """The latest records, kept for the log file a run creates once its input is checked."""

    def __init__(self, capacity: int = 10_000):
        super().__init__()
        self.buffer = collections.deque(maxlen=capacity)

    def emit(self, record):
        self.buffer.append(record)


def add_file_log(path: str | os.PathLike) -> None:
    """Also log to ``path`` (appending: a resumed run continues its log), starting with the
    records logged since setup_logging."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    for early in [h for h in root.handlers if isinstance(h, _EarlyRecords)]:
        for record in early.buffer:
            handler.handle(record)
        early.buffer.clear()
        root.removeHandler(early)
    root.addHandler(handler)


#: errors that are the user's input, reported as one line without a traceback
def user_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data.coco import DatasetError
    from .models.backbone import BackboneWeightsError
    from .engine.trainer import NonFiniteLossError

    return (ConfigError, CheckpointError, DatasetError, BackboneWeightsError, NonFiniteLossError, FileExistsError,
            PermissionError, FileNotFoundError, OSError, ValueError)


def error_line(exc: BaseException) -> str:
    """The one line that tells the user what went wrong. An error re-raised from a DataLoader
    worker carries the worker's traceback: its last line is the original message."""
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(exc).__name__


def run_main(fn, argv=None) -> int:
    """Run a tool's main; a user error becomes ``error: <one line>`` and exit status 2
    (``DETR_IRPE_TRACEBACK=1`` in the environment shows the full traceback instead)."""
    try:
        return fn(argv) or 0
    except user_errors() as exc:
        if os.environ.get("DETR_IRPE_TRACEBACK"):
            raise
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
