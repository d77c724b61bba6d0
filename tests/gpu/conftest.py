"""GPU acceptance suite (tests/gpu/README.md): every CUDA path of `bench`, each as a real CLI call.

Without a CUDA device every test here is skipped at collection (the CPU CI run passes them as
skipped in well under a second); nothing heavier than ``torch`` is imported to decide that, and
the pytest process itself never creates a CUDA context (GPU facts come from a subprocess), so the
memory it would hold does not distort the runs' peak memory or the OOM boundary of ``--batch auto``.

All CLI calls write into ONE run directory: ``$BENCH_GPU_OUT`` (tests/gpu/run.sh sets it to
``results/<run-id>-<gpu>``), else a temporary directory. Each call's command line, exit status,
time and output go to ``$BENCH_GPU_LOGS`` (else ``<run dir>-logs``). A call's records are found
through ``invocations*.jsonl`` by its exact command line, so a rerun that resumes (finished cells
skipped) still finds the records of the earlier run of the same command.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU_DIR = Path(__file__).resolve().parent

# Options every timed call shares: short cells (>= 1 s of timed iterations by the protocol's
# min_time_s, >= 10 iterations), a hard cap well inside a device call.
FAST = ("--device", "cuda", "--budget", "1", "--max-time", "30")
PRECISIONS = {"fp32": "fp32", "bf16": "amp-bf16", "fp16": "amp-fp16", "bf16-weights": "bf16-weights"}
FUSED = "torch.AdamW(fused)"
TIMING_FLAGS = {"wide-ci", "drift", "time-cap", "few-samples", "warmup-unsteady"}
# Fields that may be added to the schema later (device-level memory and energy through NVML,
# the caching allocator's reserve): checked when a record holds them, skipped otherwise.
OPTIONAL_MEMORY_FIELDS = ("mem_reserved_mb",)
OPTIONAL_NVML_PATTERN = re.compile(r"nvml|energy|power|device_mem|gpu_mem|mem_reserved", re.I)

_CUDA: bool | None = None


def cuda_available() -> bool:
    global _CUDA
    if _CUDA is None:
        try:
            import torch
        except ImportError:
            _CUDA = False
        else:
            _CUDA = bool(torch.cuda.is_available())  # cudaGetDeviceCount: no context is created
    return _CUDA


def _in_gpu_dir(item: pytest.Item) -> bool:
    try:
        return Path(str(item.path)).resolve().is_relative_to(GPU_DIR)
    except (OSError, ValueError):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/gpu ``gpu``; skip them all when CUDA is not available."""
    mine = [item for item in items if _in_gpu_dir(item)]
    if not mine:
        return
    skip = None if cuda_available() else pytest.mark.skip(
        reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in mine:
        item.add_marker(pytest.mark.gpu)
        if skip is not None:
            item.add_marker(skip)


# --------------------------------------------------------------------------------------------
# The GPU, as a subprocess sees it


_GPU_PROBE = r"""
import json, torch
p = torch.cuda.get_device_properties(0)
print(json.dumps({"name": torch.cuda.get_device_name(0), "total_mb": p.total_memory / 2**20,
                  "capability": list(torch.cuda.get_device_capability(0)), "count": torch.cuda.device_count(),
                  "torch": torch.__version__, "cuda": torch.version.cuda,
                  "bf16": torch.cuda.is_bf16_supported()}))
"""


@pytest.fixture(scope="session")
def gpu() -> dict[str, Any]:
    """Name, total memory (MB), capability, count, torch and CUDA versions of device 0."""
    proc = subprocess.run([sys.executable, "-c", _GPU_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=60)
        found = smi.returncode == 0 and smi.stdout.strip()
        info["smi_name"] = smi.stdout.strip().splitlines()[0].strip() if found else None
    except (OSError, subprocess.SubprocessError):
        info["smi_name"] = None
    return info


# --------------------------------------------------------------------------------------------
# The run directory and the CLI


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    given = os.environ.get("BENCH_GPU_OUT")
    path = Path(given).resolve() if given else tmp_path_factory.mktemp("gpu") / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def log_dir(run_dir: Path) -> Path:
    given = os.environ.get("BENCH_GPU_LOGS")
    path = Path(given).resolve() if given else run_dir.parent / f"{run_dir.name}-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_jsonl(paths) -> list[dict]:
    out = []
    for path in paths:
        for line in Path(path).read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


class Bench:
    """Runs ``python -m bench.cli <command> ...`` into the shared run directory."""

    def __init__(self, run_dir: Path, log_dir: Path, gpu: dict):
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.gpu = gpu
        self.calls = 0
        # --out as the users of the run directory will read it: relative to the repository when
        # it lies inside (trace_file paths in committed records then stay valid), else absolute.
        try:
            self.out_arg = str(run_dir.relative_to(REPO))
        except ValueError:
            self.out_arg = str(run_dir)

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if env.get("DS_ACCELERATOR") == "cpu":  # tests/run.sh sets it for the CPU suite
            del env["DS_ACCELERATOR"]
        env.setdefault("NCCL_DEBUG", "WARN")
        return env

    def __call__(self, command: str, *args: str, report: bool = False, timeout: float = 420,
                 name: str | None = None) -> list[dict]:
        """Run one bench command; fail the test on a non-zero exit; return the latest record of
        each cell this exact command line has written into the run directory (this run's, or an
        earlier run's when it resumed)."""
        argv = [command, *args, "--out", self.out_arg, *([] if report else ["--no-report"])]
        self.calls += 1
        label = name or f"{command}-{self.calls}"
        log = self.log_dir / f"{time.strftime('%H%M%S')}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.log"
        t0 = time.time()
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.cli", *argv], capture_output=True, text=True,
                                  timeout=timeout, env=self.env(), cwd=REPO)
        except subprocess.TimeoutExpired as exc:
            text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
            log.write_text(f"$ bench {shlex.join(argv)}\n# TIMEOUT after {timeout:.0f} s\n"
                           f"--- stdout\n{text(exc.stdout)}\n--- stderr\n{text(exc.stderr)}\n")
            pytest.fail(f"bench {shlex.join(argv)} ran past {timeout:.0f} s (log: {log})")
        elapsed = time.time() - t0
        log.write_text(f"$ bench {shlex.join(argv)}\n# exit {proc.returncode} after {elapsed:.1f} s\n"
                       f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}\n")
        print(f"bench {shlex.join(argv)}  -> exit {proc.returncode} in {elapsed:.1f} s (log: {log})")
        assert proc.returncode == 0, f"bench {shlex.join(argv)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        return self.records_of(argv)

    def records_of(self, argv: list[str]) -> list[dict]:
        command = shlex.join(["bench", *argv])  # what bench.sweep writes into invocations.jsonl
        invocations = read_jsonl(sorted(self.run_dir.glob("invocations*.jsonl")))
        ids = {inv.get("invocation") for inv in invocations if inv.get("command") == command}
        assert ids, f"no invocation of {command!r} in {self.run_dir}"
        records = [r for r in read_jsonl(self.record_files()) if r.get("invocation") in ids]
        latest: dict[str, dict] = {}
        for rec in records:
            key = rec.get("cell_key")
            if key not in latest or str(rec.get("timestamp")) >= str(latest[key].get("timestamp")):
                latest[key] = rec
        return list(latest.values())

    def record_files(self) -> list[Path]:
        return [p for p in sorted(self.run_dir.glob("records*.jsonl")) if not p.name.startswith("records.torn-")]

    def env_json(self) -> dict:
        return json.loads((self.run_dir / "env.json").read_text())


@pytest.fixture(scope="session")
def bench(run_dir: Path, log_dir: Path, gpu: dict) -> Bench:
    return Bench(run_dir, log_dir, gpu)


# --------------------------------------------------------------------------------------------
# What every CUDA record must show


def one(records: list[dict], **match) -> dict:
    """The single record whose fields equal ``match``."""
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one record with {match}, found {len(found)} among " \
                            f"{[(r.get('model'), r.get('res'), r.get('mode')) for r in records]}"
    return found[0]


def check_cuda_record(rec: dict, gpu: dict, *, dtype: str | None = None, tf32: bool | None = None) -> None:
    """The checks shared by every finished CUDA cell: device and GPU name, CUDA-event timing
    statistics, precision and math mode, MFU, peak memory (and the optional NVML / reserve fields
    when the schema has grown them), the fused optimizer of a training step."""
    where = f"{rec.get('model')}@{rec.get('res')} {rec.get('mode')} b{rec.get('batch')}"
    assert rec["status"] == "ok", f"{where}: {rec['status']}: {rec.get('error')}"
    # --- the device
    assert rec["device"] == "cuda", where
    assert rec["device_name"] == gpu["name"], (where, rec["device_name"], gpu["name"])
    if gpu.get("smi_name"):
        assert gpu["smi_name"] in rec["device_name"] or rec["device_name"] in gpu["smi_name"], (where, gpu["smi_name"])
    # --- timing (CUDA events; tests/gpu/test_timing.py checks the events themselves)
    assert rec["latency_ms"] > 0 and math.isfinite(rec["latency_ms"]), where
    assert rec["iters"] >= 10, f"{where}: {rec['iters']} timed iterations"
    assert rec["latency_p10_ms"] <= rec["latency_ms"] <= rec["latency_p90_ms"], where
    lo, hi = rec["latency_ci95_ms"]
    assert lo <= rec["latency_ms"] <= hi, where
    flags = set(rec.get("flags") or [])
    if not rec["timing_stable"]:
        assert flags & TIMING_FLAGS, f"{where}: timing not stable but no flag says why: {flags}"
    assert set(rec.get("timing_flags") or []) <= flags, where
    # The timed iterations took place inside the cell's wall time (events that measured nothing
    # but launches could not break this; test_timing checks that they measure device time).
    assert rec["iters"] * rec["latency_p10_ms"] / 1e3 <= rec["wall_s"], where
    # sustained: images over the summed time of the (slowest-rank) samples
    sustained = rec["global_batch"] * rec["iters"] / (sum(rec["latency_samples_ms"]) / 1e3)
    assert rec["throughput"] == pytest.approx(sustained, rel=1e-6)
    # --- precision and math mode, as recorded
    if dtype is not None:
        assert rec["dtype"] == dtype and rec["precision"] == PRECISIONS[dtype], (where, rec["dtype"], rec["precision"])
    if tf32 is not None:
        assert rec["tf32"] is tf32, (where, rec["tf32"])
    assert isinstance(rec["tf32"], bool), where
    # --- MFU: a peak measured in this run, and a figure in (0, 1]
    assert rec["peak_tflops"] and rec["peak_tflops"] > 0, where
    assert rec["achieved_tflops"] > 0, where
    assert rec["mfu"] is not None and 0 < rec["mfu"] <= 1, f"{where}: mfu {rec['mfu']} " \
        f"(achieved {rec['achieved_tflops']:.1f} of peak {rec['peak_tflops']:.1f} TFLOP/s)"
    assert "mfu-over-1" not in flags and "mfu-not-positive" not in flags, (where, flags)
    # --- memory
    assert rec["peak_mem_method"] == "cuda.max_memory_allocated", where
    assert 0 < rec["peak_mem_mb"] <= gpu["total_mb"], (where, rec["peak_mem_mb"])
    weight_bytes = 2 if rec["precision"] == "bf16-weights" else 4
    assert rec["peak_mem_mb"] >= 0.95 * rec["params"] * weight_bytes / 2**20, f"{where}: peak below the weights"
    for key in OPTIONAL_MEMORY_FIELDS:
        if rec.get(key) is not None:  # the caching allocator's reserve holds every allocation
            assert rec[key] >= rec["peak_mem_mb"] * 0.999, (where, key, rec[key])
    for key, value in rec.items():
        if OPTIONAL_NVML_PATTERN.search(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value) and value > 0, (where, key, value)
    # --- a training step
    if rec["mode"] == "train":
        assert rec["optimizer_impl"] == FUSED, (where, rec.get("optimizer_impl"))
        parts = rec["mem_breakdown_mb"]
        # Saved-tensor hooks may not see into a compiled graph's saved tensors: activations are
        # required only of eager steps.
        for part in ("params", "grads", "optimizer") + (() if rec.get("compile") else ("activations",)):
            assert parts[part] > 0, (where, part, parts)
        assert rec["peak_mem_mb"] >= 0.95 * (parts["params"] + parts["optimizer"]), (where, parts)
    else:
        assert rec["engine"] == "none", where
