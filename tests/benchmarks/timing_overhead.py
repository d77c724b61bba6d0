"""Benchmark (not a test): what the timing loop itself costs per iteration.

Times an empty step with bench.measure.timing.measure; the per-iteration figure is the harness
overhead that every measured latency contains (the inside of a timed block is only the step and
two clock reads). For scale it also prints the cost of one bare clock read.

    .venv/bin/python tests/benchmarks/timing_overhead.py
"""
import time

import torch

from bench.measure.timing import measure


def main() -> None:
    timing = measure(lambda: None, torch.device("cpu"), budget_s=1.0, max_time_s=10.0, max_iters=100_000)
    lo, hi = timing.ci95_ms
    print(f"empty step: median {timing.median_ms * 1e3:.3f} us (95% CI {lo * 1e3:.3f}-{hi * 1e3:.3f}), "
          f"p10 {timing.p10_ms * 1e3:.3f} us, p90 {timing.p90_ms * 1e3:.3f} us, cv {timing.cv:.2f}, "
          f"over {timing.iters} iterations after {timing.warmup_iters} warm-up; stop: {timing.stop_reason}")
    n = 1_000_000
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(n):
        clock()
    print(f"one perf_counter_ns read: {(clock() - t0) / n:.1f} ns")


if __name__ == "__main__":
    main()
