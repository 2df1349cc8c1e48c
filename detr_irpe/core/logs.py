"""Logging set-up of the commands: the console, and a run's log file once it exists."""

from __future__ import annotations

import collections
import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


def setup_logging(main: bool = True) -> None:
    """INFO on the main process, warnings elsewhere, to the console. Records are also held in
    memory until add_file_log names the run's log file (which does not exist before the run's
    input has been checked), so that the file holds them too."""
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, format=FORMAT, datefmt=DATE_FORMAT,
                        handlers=[logging.StreamHandler(sys.stderr), EarlyRecords()], force=True)


class EarlyRecords(logging.Handler):
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
    handler.setFormatter(logging.Formatter(FORMAT, datefmt=DATE_FORMAT))
    root = logging.getLogger()
    for early in [h for h in root.handlers if isinstance(h, EarlyRecords)]:
        for record in early.buffer:
            handler.handle(record)
        early.buffer.clear()
        root.removeHandler(early)
    root.addHandler(handler)
