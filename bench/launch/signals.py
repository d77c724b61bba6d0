"""How a run is asked to stop and how it says it stopped, shared by the sweep, the self-launcher
and the SLURM template (which requeues a job that exits ``PREEMPTED_EXIT``)."""
from __future__ import annotations

import signal

PREEMPTED_EXIT = 99  # "preempted; rerun with the same --out to resume"
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)  # SLURM's --signal=B:USR1@S, and any polite kill


class StopFlag:
    """Set by SIGUSR1/SIGTERM; the sweep checks it between cells. One per process
    (``StopFlag.shared()``), so a signal that arrives while the process starts up (before the
    sweep) still counts once the command installs it early."""

    _shared: StopFlag | None = None

    def __init__(self) -> None:
        self.signal: int | None = None
        self.installed = False

    @classmethod
    def shared(cls) -> StopFlag:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def install(self) -> StopFlag:
        if not self.installed:
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._handle)
            self.installed = True
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum
