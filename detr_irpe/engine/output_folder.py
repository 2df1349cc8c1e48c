"""The output folder of a training run: refused before anything is written when it holds another
run or cannot be written, then created and given the resolved config and the log file."""

from __future__ import annotations

import logging
import os

from ..config import save_config
from ..core.errors import OutputError
from ..core.io import remove_temporaries
from ..core.logs import add_file_log
from .run_folder import RunFolder

log = logging.getLogger(__name__)


def check_output_folder(folder: RunFolder, resuming: bool) -> None:
    """Raise OutputError when ``folder`` holds another run (a checkpoint while not ``resuming``) or
    cannot be written."""
    out = folder.path
    if folder.holds_run() and not resuming:
        raise OutputError(f"output folder {out} already holds a run ({folder.CHECKPOINT} or {folder.INTERRUPTED}); "
                          f"continue it with --resume auto or choose another train.output_dir")
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {out} cannot be written ({probe} is "
                          f"{'not a folder' if not probe.is_dir() else 'not writable'})")


def prepare_output_folder(folder: RunFolder, cfg) -> None:
    """Create the folder, remove the partial files of a killed run, save the resolved config and
    log to ``train.log``."""
    out = folder.path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output folder {out} cannot be written: {exc.strerror or exc}") from None
    for tmp in remove_temporaries(out):  # left by a process killed mid-write
        log.info("removed %s, a partial file of a killed run", tmp.name)
    save_config(cfg, folder / folder.CONFIG)
    add_file_log(folder / folder.TRAIN_LOG)
