"""bench.scenarios.result: one cell's typed result and its one turning into a record."""
from __future__ import annotations

from bench.measure.compiling import Compile
from bench.measure.memory import Memory
from bench.measure.timing import Latency, Throughput
from bench.scenarios.result import BatchSearch, CellResult

SETTINGS = {"model": "resnet18", "res": "32", "mode": "infer", "batch": "auto"}
TIMES = [20.0, 21.0, 19.0, 22.0, 20.5, 20.2, 19.8, 20.1, 20.3, 20.4]


def test_a_frontier_cell_is_its_search():
    tried = [{"batch": 1, "fits": True, "peak_mem_mb": 10.0}, {"batch": 2, "fits": True, "peak_mem_mb": 18.5},
             {"batch": 4, "fits": False, "peak_mem_mb": None}]
    rec = CellResult(SETTINGS, world_size=2, batch_search=BatchSearch(tried, 2, timed=False)).to_record()
    assert (rec["batch"], rec["global_batch"], rec["peak_mem_mb"]) == (2, 4, 18.5)
    assert rec["flags"] == ["frontier-only"] and rec["status"] == "ok" and "wall_s" not in rec
    none_fits = CellResult(SETTINGS, batch_search=BatchSearch(tried[:0], 0, timed=True))
    none_fits.failed("oom", "batch 1 does not fit")
    assert none_fits.to_record()["batch"] is None and none_fits.flags == ["batch-1-oom"]


def test_the_record_holds_each_trackers_fields_and_the_union_of_their_flags():
    latency = Latency(times_ms=TIMES[:5], warmup_iters=3, warmup_ms=60.0, stop_reason="budget")
    memory = Memory(peak_mb=12.34, method="m").over_ranks([12.3, 40.0])
    compiled = Compile(1.0, 0, 0).over_ranks([[], ["compile-fallback"]])  # another rank's graph break
    result = CellResult(SETTINGS, world_size=2, latency=latency, memory=memory, compile=compiled,
                        throughput=Throughput.sustained(latency, 2, 2, [20.5, 20.0]), derived_flags=["mfu-over-1"])
    rec = result.to_record()
    assert {k: rec[k] for k in latency.to_record()} == latency.to_record()
    assert rec["peak_mem_mb"] == 40.0 and rec["per_rank_peak_mem_mb"] == [12.3, 40.0]
    assert rec["throughput"] == 2 * 2 * 5 / (sum(TIMES[:5]) / 1e3) and rec["global_batch"] == 4
    assert rec["flags"] == ["compile-fallback", *latency.flags, "mfu-over-1"] and "few-samples" in rec["flags"]


def test_a_cell_whose_flop_count_failed_says_so():
    result = CellResult(SETTINGS, flops_failed=True, wall_s=0.0, cpu_time_s=0.0)
    result.failed("error", "RuntimeError while counting FLOPs: x")
    rec = result.to_record()
    assert rec["flags"] == ["flops-failed"] and rec["status"] == "error" and rec["wall_s"] == 0.0
