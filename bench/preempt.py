"""Preemption: SIGUSR1 / SIGTERM (SLURM's --signal, scancel) stop a sweep at a cell boundary.

Shared by ``bench run`` and ``bench finetune``; the SLURM job script requeues on PREEMPTED_EXIT.
"""
from __future__ import annotations

import signal

PREEMPTED_EXIT = 99  # "preempted; rerun with the same --out to resume"


class StopFlag:
    """Set by SIGUSR1/SIGTERM; the sweep checks it between cells."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> "StopFlag":
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum
