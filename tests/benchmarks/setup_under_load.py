"""Proof (not a test): the two set-up cases of issue 18 measure their cells on a busy machine.

Starts one busy-looping process per core, then runs, as a user would:

1. ``bench run --models resnet18,pvt_tiny --res 64 --compile --budget 2 --max-time 20``
   (the compile of forward + backward used to eat the 20 s cap and lose both training cells);
2. ``bench run --models resnet18,pvt_tiny --res 64 --engine deepspeed --zero 2 --nproc 2
   --max-time 20`` with an empty TORCH_EXTENSIONS_DIR, so DeepSpeed builds its shm communication
   op on the first step again (it used to lose the first training cell and end the job).

Prints one line per cell (status, set-up, compile, first step, timed iterations) and writes the
runs under ``OUT`` (default results/<date>-setup-under-load-cpu).

    .venv/bin/python tests/benchmarks/setup_under_load.py [OUT]
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.record import RunDir  # noqa: E402


def _spin() -> None:
    while True:
        pass


def run(out: Path, *args: str, env: dict | None = None) -> int:
    cmd = [sys.executable, "-m", "bench.cli", "run", "--models", "resnet18,pvt_tiny", "--res", "64",
           "--max-time", "20", "--out", str(out), "--no-report", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    print(f"exit {proc.returncode} after {time.time() - t0:.0f} s", flush=True)
    if proc.returncode:
        print(proc.stderr[-2000:])
    for r in RunDir(out).records():
        print(f"  {r['model']:9} {r['mode']:5} {r['status']:5} setup_s={r.get('setup_s')} "
              f"compile_s={r.get('compile_s')} first_step_s={r.get('first_step_s')} iters={r.get('iters')} "
              f"loadavg_1m={r.get('loadavg_1m'):.1f} flags={r.get('flags')} {r.get('error') or ''}")
    return proc.returncode


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "results" / (
        time.strftime("%Y%m%d") + "-setup-under-load-cpu")
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 2)]
    for p in spinners:
        p.start()
    print(f"{len(spinners)} busy-looping processes started (one per core)", flush=True)
    try:
        codes = [run(base / "compile", "--compile", "--budget", "2")]
        with tempfile.TemporaryDirectory() as extensions:
            codes.append(run(base / "deepspeed-zero2", "--engine", "deepspeed", "--zero", "2", "--nproc", "2",
                             env={"TORCH_EXTENSIONS_DIR": extensions}))
    finally:
        for p in spinners:
            p.terminate()
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
