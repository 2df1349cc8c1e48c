"""Running several training runs on one machine: each a ``detr-irpe train`` process into its own output
folder, finished runs skipped, interrupted ones resumed. Used by the demo and by ablations."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

#: the folder that holds the detr_irpe package: on the children's PYTHONPATH, so that
#: ``python -m detr_irpe`` runs this copy of the code, installed or not
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def child_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a child process running ``python -m detr_irpe``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), *filter(None, [env.get("PYTHONPATH")])])
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


@dataclass
class RunSpec:
    """One training run: a config file, overrides, an output folder and its epoch count."""

    name: str
    config: str
    output_dir: Path
    epochs: int
    overrides: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "detr_irpe", "train", "--config", str(self.config),
               *self.overrides, f"train.output_dir={self.output_dir}"]
        if run_state(self.output_dir, self.epochs) == "partial":
            cmd += ["--resume", "auto"]
        return cmd


def read_log(folder: str | os.PathLike) -> list[dict]:
    """The epoch records a run wrote (``log.jsonl``); a torn last line (killed writer) is ignored."""
    path = Path(folder) / "log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def run_state(folder: str | os.PathLike, epochs: int) -> str:
    """``done`` (all epochs logged and committed), ``partial`` (a checkpoint to resume) or ``new``."""
    folder = Path(folder)
    records = read_log(folder)
    checkpoint = folder / "checkpoint.pth"
    # an epoch's log line is written before the checkpoint that commits it: a run killed between
    # the two has a log line newer than its checkpoint, and is resumed
    if (records and records[-1].get("epoch", 0) >= epochs and checkpoint.is_file()
            and checkpoint.stat().st_mtime_ns >= (folder / "log.jsonl").stat().st_mtime_ns):
        return "done"
    if any(folder.glob("checkpoint*.pth")):
        return "partial"
    return "new"


def run_local(specs: list[RunSpec], parallel: int = 1, threads: int | None = None, poll_s: float = 1.0) -> dict[str, int]:
    """Run the specs as subprocesses, ``parallel`` at a time, each with ``threads`` CPU threads;
    console output goes to ``<output_dir>/console.log``. Returns each run's exit status (0 for
    runs already done). An interruption (Ctrl-C, or SIGTERM to this process) stops the children,
    which save their state."""
    env = child_env(threads)
    pending = [s for s in specs if run_state(s.output_dir, s.epochs) != "done"]
    status = {s.name: 0 for s in specs if s not in pending}
    for s in specs:
        if s.name in status:
            log.info("%s: already done in %s", s.name, s.output_dir)
    running: dict[str, tuple[subprocess.Popen, RunSpec]] = {}
    total = sum(s.epochs for s in specs)
    bar = tqdm(total=total, desc="epochs", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    last_report = 0.0
    previous = _stop_on_sigterm()
    try:
        while pending or running:
            while pending and len(running) < parallel:
                spec = pending.pop(0)
                spec.output_dir.mkdir(parents=True, exist_ok=True)
                console = open(spec.output_dir / "console.log", "a")
                log.info("%s: %s", spec.name, " ".join(spec.command()[1:]))
                running[spec.name] = (subprocess.Popen(spec.command(), stdout=console, stderr=subprocess.STDOUT,
                                                       env=env), spec)
            time.sleep(poll_s)
            for name, (proc, spec) in list(running.items()):
                if proc.poll() is not None:
                    status[name] = proc.returncode
                    del running[name]
                    if proc.returncode:
                        tail = (spec.output_dir / "console.log").read_text().splitlines()[-15:]
                        log.error("%s failed (exit status %d); the end of %s:\n%s", name, proc.returncode,
                                  spec.output_dir / "console.log", "\n".join(tail))
            done_epochs = sum(min(s.epochs, len(read_log(s.output_dir))) for s in specs)
            bar.n = done_epochs
            bar.refresh()
            if not sys.stderr.isatty() and time.time() - last_report > 60:
                last_report = time.time()
                log.info("progress: " + ", ".join(f"{s.name} {_summary(s)}" for s in specs))
    except KeyboardInterrupt:
        for proc, _ in running.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in running.values():
            proc.wait(timeout=120)
        raise
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return status


def _stop_on_sigterm():
    """Make SIGTERM stop the runs as Ctrl-C does (a job scheduler or ``kill`` sends SIGTERM); returns
    the handler it replaced, or None off the main thread, where signals cannot be handled."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _summary(spec: RunSpec) -> str:
    records = read_log(spec.output_dir)
    if not records:
        return "starting"
    r = records[-1]
    ap = f" AP50 {r['AP50']:.3f}" if "AP50" in r else ""
    return f"epoch {r['epoch']}/{spec.epochs}{ap}"
