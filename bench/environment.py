"""What produced a run: software versions, hardware, host, commit and command line."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

_FLUSH_DENORMAL: bool | None = None


def flush_denormals() -> bool:
    """Flush denormal floats to zero (FTZ/DAZ) on CPU, in every command that runs torch ops, before
    its first one, once its command line is checked (bench/commands/: run, profile, finetune, flops).

    Losses drive gradients of confident predictions below 1e-38; x86 CPUs compute on such
    denormals 10-100x slower (a RetinaNet step measured 5 s instead of 0.25 s), a cost GPUs don't
    pay. The flag is per thread and OpenMP workers copy it when they start, so it must be set
    before torch's first parallel op. Recorded in env.json."""
    global _FLUSH_DENORMAL
    _FLUSH_DENORMAL = torch.set_flush_denormal(True)
    return _FLUSH_DENORMAL


PACKAGES = ("torch", "torchvision", "timm", "fvcore", "deepspeed", "numpy", "pandas", "pycocotools", "bench")


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def collect_env(command: str, device: torch.device | None = None, run_id: str | None = None) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = device or torch.device("cpu")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "run_id": run_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "device": device.type,
        "device_name": device_name(device),
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "packages": versions,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "flush_denormal": _FLUSH_DENORMAL,
        # The math mode every cell of this invocation ran in (bench.scenarios.step.apply_math_mode).
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "threads_allotted": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
