"""What a long run reports while it trains: per log interval the images per second, the time
spent waiting for data, the ETA of the epoch and of the run and the peak memory (for log lines
that a SLURM log shows, not only the terminal's progress bar), and a console that keeps the
progress bar intact when log records or warnings arrive during an epoch."""

from __future__ import annotations

import contextlib
import logging
import sys
import time


class StepMonitor:
    """Timing of one epoch's steps. Call :meth:`data_ready` when a batch has arrived and
    :meth:`step_done` when its step is finished; :meth:`scalars` gives the figures of the
    interval since the last call (and resets it)."""

    def __init__(self, steps_in_epoch: int, start_step: int, steps_after_epoch: int, device=None,
                 clock=time.perf_counter):
        self.steps_in_epoch = steps_in_epoch
        self.steps_after_epoch = steps_after_epoch  # steps of the epochs still to come
        self.device = device
        self.clock = clock
        self.step = start_step
        now = clock()
        self._epoch_start, self._epoch_steps = now, 0
        self._mark = self._last = now
        self._data = 0.0
        self._images = 0
        self._steps = 0

    def data_ready(self) -> None:
        now = self.clock()
        self._data += now - self._last
        self._last = now

    def step_done(self, images: int) -> None:
        self._last = self.clock()
        self._images += images
        self._steps += 1
        self._epoch_steps += 1
        self.step += 1

    def scalars(self) -> dict:
        """``images_per_s``, ``data_s`` (mean wait for a batch), ``step_s`` (mean step, data
        included), ``eta_epoch_s``, ``eta_run_s`` (from the epoch's mean step so far) and
        ``peak_memory_mib`` of the interval since the previous call."""
        now = self.clock()
        elapsed = max(now - self._mark, 1e-9)
        per_step = (now - self._epoch_start) / max(self._epoch_steps, 1)
        left = max(self.steps_in_epoch - self.step, 0)
        out = {"images_per_s": self._images / elapsed, "data_s": self._data / max(self._steps, 1),
               "step_s": elapsed / max(self._steps, 1), "eta_epoch_s": left * per_step,
               "eta_run_s": (left + self.steps_after_epoch) * per_step}
        peak = peak_memory_mib(self.device)
        if peak is not None:
            out["peak_memory_mib"] = peak
        self._mark, self._data, self._images, self._steps = now, 0.0, 0, 0
        return out


def peak_memory_mib(device=None) -> float | None:
    """Peak memory of this process in MiB: allocated CUDA memory on a CUDA device, else the
    resident-set high-water mark (None where neither can be read)."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource
    except ImportError:  # not on every platform
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10  # bytes on macOS, KiB on Linux


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def step_line(epoch: int, epochs: int, step: int, steps: int, update: int, scalars: dict) -> str:
    """The log line of a log interval: where the run is, the loss, the speed, the ETAs, memory."""
    parts = [f"epoch {epoch}/{epochs} step {step}/{steps} (iteration {update}):",
             f"loss {scalars.get('loss', float('nan')):.4f}", f"lr {scalars.get('lr', float('nan')):.2e}"]
    if "images_per_s" in scalars:
        parts += [f"| {scalars['images_per_s']:.1f} img/s", f"data {1000 * scalars['data_s']:.0f} ms/step",
                  f"step {1000 * scalars['step_s']:.0f} ms", f"| ETA epoch {duration(scalars['eta_epoch_s'])}",
                  f"run {duration(scalars['eta_run_s'])}"]
    if "peak_memory_mib" in scalars:
        parts.append(f"| peak {scalars['peak_memory_mib']:.0f} MiB")
    return " ".join(parts)


@contextlib.contextmanager
def console_for_progress_bars():
    """Log records (warnings included, through logging) go to the console through tqdm, so that
    they print above a progress bar instead of breaking it; restored on exit."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    logging.captureWarnings(True)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        logging.captureWarnings(False)
