"""Stopping a run cleanly: while a `StopRequest` is active, SIGTERM (a preemption notice, `kill`)
asks training to stop at its next checkpoint instead of killing the process; `pdjax.train.fit`
saves the current step and raises `Preempted`, and the same call resumes from it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class Preempted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint; the same call resumes it."""


class StopRequest:
    """While active (a `with` block in the main thread), SIGTERM sets `StopRequest.requested`
    instead of killing the process, so that training stops at its next checkpoint. The flag is
    process-wide: a notice that arrives between stages (or during an evaluation) stops the next
    `fit` as soon as it can save. `pdjax.cli.runs.run_cli` keeps it active for a whole experiment.
    Elsewhere it does nothing."""

    requested = False
    _depth = 0
    _previous: Any = None

    @staticmethod
    def _handle(signum: int, frame: Any) -> None:
        StopRequest.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            if StopRequest._depth == 0:
                StopRequest._previous = signal.signal(signal.SIGTERM, StopRequest._handle)
            StopRequest._depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        if threading.current_thread() is threading.main_thread() and StopRequest._depth > 0:
            StopRequest._depth -= 1
            if StopRequest._depth == 0:
                signal.signal(signal.SIGTERM, StopRequest._previous)
                StopRequest._previous = None

    @staticmethod
    def honour(message: str) -> Preempted:
        """Clears the request and returns the `Preempted` to raise."""
        StopRequest.requested = False
        return Preempted(message)
