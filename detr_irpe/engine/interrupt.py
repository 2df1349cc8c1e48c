"""Stop signals during training: the first asks the loop to save its state and stop at the next
step boundary, a second stops at once."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

#: SIGUSR2 is what SLURM sends ahead of a time limit (absent on Windows)
STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR2", None)) if s is not None)


class TrainingInterrupted(Exception):
    """The run was asked to stop (SIGTERM / SIGINT / preemption) and saved its state."""


class StopSignals:
    """Handlers of STOP_SIGNALS while in a ``with`` block (installed from the main thread only, where
    Python delivers signals). The first signal is recorded in ``requested`` (its name) for the
    loop to stop at its next step boundary; a second raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested: str | None = None
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum, frame) -> None:
        self.request(signum)

    def request(self, signum: int) -> None:
        """Ask for a stop as signal ``signum`` does; when one was asked for already, stop at once."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self.signum = signum
        log.warning("%s received: saving the current state at the next step boundary", self.requested)

    def pass_on(self) -> None:
        """Call the handler installed before ours for the signal received, once the state is saved
        (submitit's requeues the SLURM job)."""
        previous = self._previous.get(self.signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.signum, None)
