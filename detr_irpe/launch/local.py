"""Running several training runs on one machine: each a ``detr-irpe train`` process into its own output
folder, finished runs skipped, interrupted ones resumed. Used by the demo and by ablations."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..engine.run_folder import RunFolder
from .slurm import SlurmJob

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

    def train_args(self) -> list[str]:
        """The ``detr-irpe train`` arguments of this run (``--resume auto`` for one to continue)."""
        args = ["--config", str(self.config), *self.overrides, f"train.output_dir={self.output_dir}"]
        if RunFolder(self.output_dir).state(self.epochs) == "partial":
            args += ["--resume", "auto"]
        return args

    def command(self) -> list[str]:
        """The run as one local process."""
        return [sys.executable, "-m", "detr_irpe", "train", *self.train_args()]

    def torchrun_command(self, nproc_per_node: int) -> list[str]:
        """The run as ``nproc_per_node`` processes on this machine (torchrun)."""
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
                "-m", "detr_irpe", "train", *self.train_args()]

    def slurm_command(self, job: SlurmJob) -> list[str]:
        """The run submitted as the SLURM ``job`` (detr-irpe submit)."""
        return [sys.executable, "-m", "detr_irpe", "submit", *job.submit_args(), *self.train_args()]


def run_local(specs: list[RunSpec], parallel: int = 1, threads: int | None = None, poll_s: float = 1.0) -> dict[str, int]:
    """Run the specs as subprocesses, ``parallel`` at a time, each with ``threads`` CPU threads;
    console output goes to ``<output_dir>/console.log``. Returns each run's exit status (0 for
    runs already done). An interruption (Ctrl-C, or SIGTERM to this process) stops the children,
    which save their state."""
    env = child_env(threads)
    pending = [s for s in specs if RunFolder(s.output_dir).state(s.epochs) != "done"]
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
                console = open(spec.output_dir / RunFolder.CONSOLE_LOG, "a")
                log.info("%s: %s", spec.name, " ".join(spec.command()[1:]))
                running[spec.name] = (subprocess.Popen(spec.command(), stdout=console, stderr=subprocess.STDOUT,
                                                       env=env), spec)
            time.sleep(poll_s)
            for name, (proc, spec) in list(running.items()):
                if proc.poll() is not None:
                    status[name] = proc.returncode
                    del running[name]
                    if proc.returncode:
                        tail = (spec.output_dir / RunFolder.CONSOLE_LOG).read_text(errors="replace").splitlines()[-15:]
                        log.error("%s failed (exit status %d); the end of %s:\n%s", name, proc.returncode,
                                  spec.output_dir / RunFolder.CONSOLE_LOG, "\n".join(tail))
            done_epochs = sum(min(s.epochs, len(RunFolder(s.output_dir).read_log())) for s in specs)
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
    records = RunFolder(spec.output_dir).read_log()
    if not records:
        return "starting"
    r = records[-1]
    ap = f" AP50 {r['AP50']:.3f}" if "AP50" in r else ""
    return f"epoch {r['epoch']}/{spec.epochs}{ap}"
