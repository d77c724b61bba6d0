"""Self-launch: ``--nproc N`` re-executes the same command under torchrun (single node).

Launching stays here, out of model and measuring code. Under an existing launcher (torchrun,
srun, the DeepSpeed launcher) nothing is re-launched: bench.distributed reads its environment.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def under_launcher() -> bool:
    from bench.distributed import started_by_srun

    return "RANK" in os.environ or started_by_srun()


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


def relaunch_if_requested(nproc: int, extra_args: list[str] | None = None, threads_per_rank: int | None = None) -> None:
    """When ``nproc > 1`` and no launcher started us, run this command under torchrun with
    ``nproc`` ranks and exit with its status (torchrun ends every rank when one dies)."""
    if nproc <= 1 or under_launcher():
        return
    args = strip_option(sys.argv[1:], "--nproc") + list(extra_args or [])
    env = dict(os.environ)
    threads = threads_per_rank or max(1, (os.cpu_count() or 1) // nproc)
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()),
        "--monitor-interval", "1",
        "-m", "bench.cli", *args,
    ]
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        print(f"bench: {nproc}-rank job failed (exit {proc.returncode}); see the rank errors above", file=sys.stderr)
    sys.exit(proc.returncode)
