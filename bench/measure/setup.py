"""A cell's one-time set-up, kept out of ``--max-time`` and bounded by ``--setup-timeout``.

Set-up is everything a cell does once before its first timed iteration: building the model and
the engine (DeepSpeed builds its communication op here), the compile, the first step's
allocations and cuDNN's autotuning, the ``--batch auto`` search. On a busy machine it can take
longer than the cap on the timing itself, and it is not what the cap is for: the cap's clock
starts when timing starts, and set-up gets its own, generous limit.

The limit is enforced with SIGALRM (``signal.setitimer``): set-up runs in Python code (dynamo,
inductor, a ninja build waited on by ``subprocess``), which an exception raised by the handler
interrupts at its next bytecode. A C call that never returns (a collective whose peer is gone)
is not interrupted; the process group's ``--timeout`` ends those. Written by hand: neither torch
nor the standard library has a deadline that raises in the thread that runs the work.
"""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

SETUP_TIMEOUT_FLAG = "setup-timeout"


class SetupTimeout(BaseException):
    """The cell's set-up ran past ``--setup-timeout``: the cell is recorded with the flag
    ``setup-timeout`` and the sweep goes on. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way (the ``--batch auto`` search's, dynamo's fallbacks) swallows it."""


@dataclass
class SetupClock:
    """The set-up deadline of one cell: armed at the cell's start, disarmed when timing starts.

    ``seconds()`` is the set-up's length (cell start to the first timed iteration); ``first_step_s``
    is the untimed first step's part of it (None when the compile was the first step)."""

    limit_s: float | None
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    first_step_s: float | None = None
    _previous: object = None
    _armed: bool = False

    def __enter__(self) -> "SetupClock":
        if self.limit_s is not None and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGALRM, self._expired)
            signal.setitimer(signal.ITIMER_REAL, self.limit_s)
            self._armed = True
        return self

    def _expired(self, signum, frame) -> None:
        raise SetupTimeout(f"set-up took longer than --setup-timeout {self.limit_s:g} s (building, compiling, "
                           "the first step); raise --setup-timeout if the machine is busy")

    def done(self) -> None:
        """Set-up is over: disarm the deadline and stop the set-up clock (idempotent)."""
        if self.ended is None:
            self.ended = time.perf_counter()
        self._disarm()

    def _disarm(self) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
            self._armed = False

    def __exit__(self, *exc) -> None:
        self._disarm()

    def seconds(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def to_record(self) -> dict:
        out = {"setup_s": None if self.ended is None else round(self.seconds(), 3)}
        if self.first_step_s is not None:
            out["first_step_s"] = round(self.first_step_s, 3)
        return out
