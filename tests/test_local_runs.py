"""detr_irpe.launch.local: runs side by side as child processes, stopped with the parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_to_the_launcher_stops_its_running_children(tmp_path):
    # two "runs" that only sleep and record their pid; the launcher is stopped with SIGTERM, as a
    # scheduler or `kill` stops it
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from detr_irpe.launch.local import RunSpec, run_local

        class Sleeper(RunSpec):
            def command(self):
                code = ("import os, time, pathlib; pathlib.Path(%r).write_text(str(os.getpid())); time.sleep(120)"
                        % str(self.output_dir / "pid"))
                return [sys.executable, "-c", code]

        specs = [Sleeper(name, "none", Path({str(tmp_path)!r}) / name, 1) for name in ("a", "b")]
        run_local(specs, parallel=2, poll_s=0.1)
    """)
    launcher = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    pids = [tmp_path / name / "pid" for name in ("a", "b")]
    deadline = time.time() + 60
    while not all(p.is_file() and p.read_text() for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    children = [int(p.read_text()) for p in pids]
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(timeout=60)
    assert launcher.returncode != 0  # stopped, not finished
    for pid in children:
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive, f"child {pid} still runs after the launcher was stopped"
