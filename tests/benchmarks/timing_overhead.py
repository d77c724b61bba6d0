"""Benchmark (not a test): what the timing loop itself costs per iteration.

Times an empty step with bench.speed.measure; the per-iteration figure is the harness overhead
that every measured latency contains.

    .venv/bin/python tests/benchmarks/timing_overhead.py
"""
import torch

from bench.speed import measure


def main() -> None:
    timing = measure(lambda: None, torch.device("cpu"), budget_s=1.0, max_iters=100_000)
    print(f"empty step: median {timing.median_ms * 1e3:.2f} us, p90 {timing.p90_ms * 1e3:.2f} us "
          f"over {len(timing.times_ms)} iterations")


if __name__ == "__main__":
    main()
