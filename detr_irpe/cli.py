"""Shared command-line plumbing of the tools: logging set-up and one-line error reporting."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(output_dir: str | None = None, main: bool = True) -> None:
    """INFO on the main process (console, and ``output_dir/train.log``), warnings elsewhere."""
    level = logging.INFO if main else logging.WARNING
    handlers = [logging.StreamHandler(sys.stderr)]
    if output_dir and main:
        try:
            os.makedirs(os.path.expanduser(output_dir), exist_ok=True)
            handlers.append(logging.FileHandler(os.path.join(os.path.expanduser(output_dir), "train.log")))
        except OSError:
            pass  # the run itself reports an output folder it cannot write, with a clear message
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", handlers=handlers, force=True)


#: errors that are the user's input, reported as one line without a traceback
def user_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data.coco import DatasetError
    from .models.backbone import BackboneWeightsError
    from .engine.trainer import NonFiniteLossError

    return (ConfigError, CheckpointError, DatasetError, BackboneWeightsError, NonFiniteLossError, FileExistsError,
            PermissionError, FileNotFoundError, OSError, ValueError)


def run_main(fn, argv=None) -> int:
    """Run a tool's main; a user error becomes ``error: <one line>`` and exit status 2."""
    try:
        return fn(argv) or 0
    except user_errors() as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {text}", file=sys.stderr)
        return 2
