"""The issue's "worth a check on the device" list, one check per call, each printing one JSON line:
tests/gpu/run.sh runs each as its own step (its own timeout) and appends the line to
``$OUT/checks.jsonl`` as soon as it finishes, so a timeout keeps what was already measured.

    python tests/gpu/checks.py NAME          run one check on the GPU
    python tests/gpu/checks.py --list        the names, most valuable first
    python tests/gpu/checks.py NAME --dry-run   what NAME would do (CPU rehearsal: no CUDA touched)

Every check reports what it saw; none asserts. A failure is a finding to file, not a crash of the run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
CHECKS: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {}


def check(name: str, what: str):
    def register(fn: Callable[[], dict[str, Any]]):
        CHECKS[name] = (what, fn)
        return fn
    return register


def _gemm_tflops(dtype, n: int = 8192, iters: int = 20) -> float:
    """Achieved TFLOP/s of an n³ matmul, timed with CUDA events over ``iters`` after 3 warm-ups."""
    import torch

    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12


@check("gemm-peak", "bench's measured bf16 GEMM peak and mfu_datasheet's datasheet peak for this GPU")
def gemm_peak() -> dict[str, Any]:
    import torch

    from bench.measure.peak import datasheet_tflops, measure_peak

    name = torch.cuda.get_device_name(0)
    peak = measure_peak("cuda", torch.bfloat16, budget_s=2.0)
    sheet = datasheet_tflops(name, "bf16", True)
    value = getattr(peak, "tflops", None)
    return {"device_name": name, "measured_bf16_tflops": value, "peak": repr(peak)[:400],
            "datasheet_bf16_tflops": sheet, "measured_over_datasheet": value / sheet if value and sheet else None,
            "direct_8192_bf16_tflops": _gemm_tflops(torch.bfloat16)}


@check("tf32", "an fp32 GEMM with TF32 off and on (bench's --tf32)")
def tf32() -> dict[str, Any]:
    import torch

    out = {}
    for on in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = on
        out[f"fp32_tflops_tf32_{'on' if on else 'off'}"] = _gemm_tflops(torch.float32)
    out["ratio_on_over_off"] = out["fp32_tflops_tf32_on"] / out["fp32_tflops_tf32_off"]
    return out


@check("int32-indexing", "a tensor past 2**31 elements: a 32-bit indexing error is not an out-of-memory")
def int32_indexing() -> dict[str, Any]:
    import torch

    n = 2**31 + 2**20
    out: dict[str, Any] = {"elements": n}
    x = torch.ones(n, device="cuda", dtype=torch.bfloat16)
    for label, op in (("sum", lambda: float(x.float().sum())), ("index_past_2_31", lambda: float(x[n - 5])),
                      ("relu_", lambda: float(torch.relu_(x)[-1])),
                      ("conv_2_31_out", lambda: _big_conv(torch))):
        try:
            out[label] = op()
        except Exception as exc:  # noqa: BLE001 - the finding is the error's text
            out[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        torch.cuda.synchronize()
    return out


def _big_conv(torch) -> list[int]:
    """A convolution whose output has more than 2**31 elements (what --batch auto reaches at 2048)."""
    conv = torch.nn.Conv2d(3, 64, 7, stride=2, padding=3, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        y = conv(torch.zeros(33, 3, 2048, 2048, device="cuda", dtype=torch.bfloat16))  # 33 x 64 x 1024² > 2**31
    return list(y.shape)


@check("nvml-energy", "NVML's energy counter and power over 2 s of GEMMs (inside a VM it may be refused)")
def nvml_energy() -> dict[str, Any]:
    import pynvml
    import torch

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    out: dict[str, Any] = {}
    try:
        e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as exc:
        return {"energy_counter": f"refused: {exc}"}
    t0 = time.time()
    while time.time() - t0 < 2:
        _gemm_tflops(torch.bfloat16, 4096, 10)
    e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    out["joules"] = (e1 - e0) / 1e3
    out["mean_watts"] = out["joules"] / (time.time() - t0)
    try:
        out["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3
    except pynvml.NVMLError as exc:
        out["power_limit_w"] = f"refused: {exc}"
    return out


_PROFILE = """
import torch
from torch.profiler import ProfilerActivity, profile
x = torch.randn(1024, 1024, device="cuda")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    (x @ x).sum().item()
print("kernels", sum(1 for e in prof.events() if e.device_type.name == "CUDA"))
"""


@check("kineto-log-level", "whether KINETO_LOG_LEVEL=5 (set by bench's entry) hides CUPTI errors the default shows")
def kineto_log_level() -> dict[str, Any]:
    out = {}
    for label, level in (("default", None), ("bench_5", "5")):
        env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
        if level:
            env["KINETO_LOG_LEVEL"] = level
        proc = subprocess.run([sys.executable, "-c", _PROFILE], capture_output=True, text=True, timeout=120, env=env)
        lines = (proc.stdout + proc.stderr).splitlines()
        out[label] = {"rc": proc.returncode, "kernels": next((ln for ln in lines if ln.startswith("kernels")), None),
                      "cupti_or_error_lines": [ln[:200] for ln in lines if "CUPTI" in ln or "ERROR" in ln][:10]}
    return out


def _bench(*args: str, timeout: float = 150) -> dict[str, Any]:
    """One `bench` call into a scratch run directory: exit code, its stderr's tail, its records."""
    out = Path(os.environ.get("BENCH_GPU_CHECKS_DIR", "/tmp/bench-gpu-checks")) / f"run-{time.time_ns()}"
    proc = subprocess.run([sys.executable, "-m", "bench.cli", *args, "--out", str(out), "--no-report"],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    recs = []
    for path in sorted(out.glob("records*.jsonl")):
        recs += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keep = ("model", "res", "mode", "batch", "status", "flags", "error", "latency_ms", "compile_s",
            "compile_recompiles", "compile_graph_breaks", "peak_mem_mb", "first_step_peak_mem_mb", "engine")
    return {"rc": proc.returncode, "stderr_tail": proc.stderr[-1500:],
            "records": [{k: r.get(k) for k in keep} for r in recs]}


@check("nccl-world-1-teardown", "DDP and DeepSpeed at world size 1: the one-rank NCCL group torn down at exit")
def nccl_teardown() -> dict[str, Any]:
    out = {}
    for engine in ("ddp", "deepspeed"):
        got = _bench("run", "--models", "resnet18", "--res", "64", "--modes", "train", "--engine", engine,
                     "--device", "cuda", "--budget", "0.3", "--max-time", "30")
        got["destroy_warning"] = "destroy_process_group" in got["stderr_tail"]
        out[engine] = got
    return out


@check("compile-hooks-and-auto-batch", "--compile with the memory-breakdown hooks (train), and after --batch auto")
def compile_checks() -> dict[str, Any]:
    hooks = _bench("run", "--models", "resnet18", "--res", "128", "--modes", "train", "--compile", "--device", "cuda",
                   "--dtype", "bf16", "--budget", "0.5", "--max-time", "60")
    auto = _bench("run", "--models", "resnet18", "--res", "128", "--modes", "infer", "--compile", "--batch", "auto",
                  "--max-batch", "64", "--time-auto-batch", "--device", "cuda", "--budget", "0.5", "--max-time", "90")
    return {"compile_train_breakdown_hooks": hooks, "compile_after_batch_auto": auto}


def main(argv: list[str]) -> int:
    if "--list" in argv:
        print("\n".join(CHECKS))
        return 0
    names = [a for a in argv if not a.startswith("--")]
    if len(names) != 1 or names[0] not in CHECKS:
        print(f"usage: checks.py NAME [--dry-run] | --list; NAME one of {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    name = names[0]
    what, fn = CHECKS[name]
    line: dict[str, Any] = {"check": name, "what": what}
    t0 = time.time()
    if "--dry-run" in argv:
        line |= {"status": "dry-run"}
    else:
        try:
            line |= {"status": "measured", "result": fn()}
        except Exception as exc:  # noqa: BLE001 - said, and the next check runs
            line |= {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    line["seconds"] = round(time.time() - t0, 2)
    print(json.dumps(line, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
