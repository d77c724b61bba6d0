"""Self-launch: ``--nproc N`` re-executes the same command under torchrun (single node).

Launching stays here, out of model and measuring code. Under an existing launcher (torchrun,
srun, the DeepSpeed launcher) nothing is re-launched: bench.launch.context reads its environment.

Stopping: the parent forwards SIGTERM / SIGUSR1 to every rank (they stop at the next cell
boundary, agreed by all-reduce) and exits 99 once the job has ended, as a single process does;
on SIGINT (Ctrl-C) it interrupts every rank and exits 130. No process is left behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.errors import BadInput
from bench.launch.context import free_port, started_by_srun

PREEMPTED_EXIT = 99


def under_launcher() -> bool:
    return "RANK" in os.environ or started_by_srun()


def allotted_cores() -> int:
    """Cores this process may run on (cgroups / SLURM allocations), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_out_dir(out: str | None) -> None:
    """A bad ``--out`` (a file, under a file, read-only, empty) is refused before anything runs."""
    if out is None:
        return
    if not str(out).strip():
        raise BadInput("--out is empty; give a directory, e.g. --out results/my-run")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--out {out} is a file, not a directory; choose another --out")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"--out {out} is under a file ({parent}); choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"--out {out}: {parent} is not writable; choose another --out")
    if path.exists():
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            raise BadInput(f"--out {out} is not writable ({exc.strerror}); choose another --out") from None


def strip_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        if arg.startswith(name + "="):
            continue
        out.append(arg)
    return out


def _signal_ranks(job: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the ranks (torchrun's children), not torchrun itself, which would kill
    them at once rather than let them stop at a cell boundary."""
    import psutil

    try:
        ranks = psutil.Process(job.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for proc in ranks:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def relaunch_if_requested(nproc: int, extra_args: list[str] | None = None, threads_per_rank: int | None = None) -> None:
    """When ``nproc > 1`` and no launcher started us, run this command under torchrun with
    ``nproc`` ranks and exit with its status (torchrun ends every rank when one dies)."""
    if nproc <= 1 or under_launcher():
        return
    args = strip_option(sys.argv[1:], "--nproc") + list(extra_args or [])
    env = dict(os.environ)
    if threads_per_rank:
        env["OMP_NUM_THREADS"] = str(threads_per_rank)
    elif "OMP_NUM_THREADS" not in env:  # never overwrite what SLURM or the user set
        env["OMP_NUM_THREADS"] = str(max(1, allotted_cores() // nproc))
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()),
        "--monitor-interval", "1",
        "-m", "bench.cli", *args,
    ]
    stopped: list[int] = []

    def forward(signum, frame):
        stopped.append(signum)
        _signal_ranks(job, signum)

    job = subprocess.Popen(cmd, env=env)
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        code = job.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopped:
        interrupted = signal.SIGINT in stopped
        print(f"bench: {'interrupted' if interrupted else 'stopped'} the {nproc}-rank job"
              + ("" if interrupted else " at a cell boundary; rerun with the same --out to resume"), file=sys.stderr)
        sys.exit(130 if interrupted else PREEMPTED_EXIT)
    if code != 0:
        print(f"bench: {nproc}-rank job failed (exit {code}); see the rank errors above", file=sys.stderr)
    sys.exit(code)
