"""Why a run stops early, and the SIGTERM/SIGINT handler that asks it to."""
from __future__ import annotations

import enum
import signal
import threading
from typing import Any


class StopReason(str, enum.Enum):
    SIGNAL = "signal"
    STOP_AFTER_STEPS = "stop_after_steps"
    TIME_BUDGET = "time_budget"


class SignalCatcher:
    """While active, SIGTERM/SIGINT set ``.signal`` (the run finishes its step, checkpoints and
    returns); a second Ctrl-C raises KeyboardInterrupt at once. Only in the main thread."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "SignalCatcher":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


__all__ = ["StopReason", "SignalCatcher"]
