"""issue 19 A, the scaling study: --nproc lists, --global-batch, the matching of a multi-rank cell
with its world-size-1 base, the two efficiency formulas, their CI on synthetic records, the
study loop's exit codes, and the report section."""
from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import numpy as np
import pytest

from bench import config as cfgmod
from bench.errors import BadInput
from bench.launch import local
from bench.measure import derived
from bench.report.load import Run
from bench.report.study import is_study, run_rows, statement, study_section, study_table


# --------------------------------------------------------------------------- --nproc, --global-batch
def test_nproc_list_parsed_ascending():
    assert cfgmod.parse_nprocs("1,2,4") == [1, 2, 4]
    assert cfgmod.parse_nprocs("4,1") == [1, 4]
    assert cfgmod.parse_nprocs("2") == [2]  # --nproc N as today
    assert cfgmod.run_config({"models": "resnet18"}).nproc == [1]
    assert cfgmod.run_config({"models": "resnet18", "nproc": "1,2", "modes": "infer"}).nproc == [1, 2]


@pytest.mark.parametrize("bad", ["1,2,2", "0", "1,0", "", "1,,2", "a", "2,-1", "1, 2x"])
def test_nproc_list_refused(bad):
    with pytest.raises(BadInput):
        cfgmod.parse_nprocs(bad)


def test_global_batch_must_divide_every_world_size():
    with pytest.raises(BadInput, match="does not divide over 2 ranks"):
        cfgmod.run_config({"models": "resnet18", "nproc": "1,2", "global_batch": "3", "modes": "infer"})
    cfg = cfgmod.run_config({"models": "resnet18", "nproc": "1,2,4", "global_batch": "8", "modes": "infer"})
    assert [cfg.batches_for(n) for n in (1, 2, 4)] == [[8], [4], [2]]
    assert cfg.scaling_mode == "strong"
    weak = cfgmod.run_config({"models": "resnet18", "nproc": "1,2", "batches": "4", "modes": "infer"})
    assert weak.batches_for(2) == [4] and weak.scaling_mode == "weak"


def test_global_batch_identity_only_when_set():
    """Runs made before --global-batch keep their resume identity (no new key); a strong run's
    identity carries it, so weak and strong cells never resume one another."""
    weak = cfgmod.run_config({"models": "resnet18"})
    assert "global_batch" not in cfgmod.identity(weak, True, {})
    strong = cfgmod.run_config({"models": "resnet18", "global_batch": "4"})
    assert cfgmod.identity(strong, True, {})["global_batch"] == 4


def test_study_command_replaces_nproc_and_out():
    cmd = local.study_command(["run", "--models", "resnet18", "--nproc", "1,2", "--out=x", "--res", "64"], 2, "/r")
    assert cmd[3:] == ["run", "--models", "resnet18", "--res", "64", "--nproc", "2", "--out", "/r", "--no-report"]


class _FakeJob:
    def __init__(self, code: int):
        self.code = code

    def wait(self) -> int:
        return self.code

    def send_signal(self, sig) -> None:
        pass


def _fake_study(monkeypatch, codes: list[int]) -> list[int]:
    ran: list[int] = []

    def popen(cmd, env=None, **kw):
        ran.append(int(cmd[cmd.index("--nproc") + 1]))
        return _FakeJob(codes[len(ran) - 1])

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    return ran


@pytest.mark.parametrize("codes, want_code, want_ran", [
    ([0, 0, 0], 0, [1, 2, 4]),
    ([1, 0, 0], 1, [1, 2, 4]),     # a failed world size: the others still run, exit 1
    ([0, 99, 0], 99, [1, 2]),      # a stop ends the study
    ([130, 0, 0], 130, [1]),       # Ctrl-C ends the study
])
def test_study_exit_codes(monkeypatch, codes, want_code, want_ran):
    ran = _fake_study(monkeypatch, codes)
    assert local.run_study([4, 1, 2], "/tmp/x", None, argv=["run", "--nproc", "1,2,4"]) == want_code
    assert ran == want_ran


def test_study_stop_signal_between_sizes(monkeypatch):
    """A SIGTERM that arrives while a size runs (forwarded to it) runs no further size: exit 99."""
    ran: list[int] = []

    class Job(_FakeJob):
        def wait(self) -> int:
            signal.raise_signal(signal.SIGTERM)  # the study's handler forwards and remembers it
            return 0

    def popen(cmd, env=None, **kw):
        ran.append(int(cmd[cmd.index("--nproc") + 1]))
        return Job(0)

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    assert local.run_study([1, 2], "/tmp/x", None, argv=["run"]) == 99
    assert ran == [1]


def test_study_threads_env(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(local, "allotted_cores", lambda: 8)
    assert local.study_env(1, None)["OMP_NUM_THREADS"] == "8"  # total threads fixed: N=1 gets all cores
    assert "OMP_NUM_THREADS" not in local.study_env(2, None)  # relaunch_if_requested gives cores / N
    assert "OMP_NUM_THREADS" not in local.study_env(1, 3)  # --threads T: start() sets T


# --------------------------------------------------------------------------- matching and formulas
def rec(world: int, step_ms: float, *, batch: int = 2, threads: int = 2, scaling: str = "weak", repeat: int = 0,
        n: int = 40, seed: int = 0, **extra) -> dict:
    """A synthetic ok record: ``n`` step samples around ``step_ms`` (1% noise)."""
    rng = np.random.default_rng(seed + 100 * world + repeat)
    samples = list(step_ms * (1 + 0.01 * rng.standard_normal(n)))
    global_batch = batch * world
    r = {"status": "ok", "kind": "run", "model": "pvt_tiny", "res": "64", "mode": "train", "task": "cls",
         "precision": "fp32", "dtype": "fp32", "device_name": "cpu-x", "channels_last": False, "compile": False,
         "tf32": True, "engine": "ddp", "world_size": world, "threads": threads, "batch": batch,
         "global_batch": global_batch, "scaling_mode": scaling, "repeat": repeat, "run_id": "R",
         "timestamp": f"2026-11-28T00:00:{world:02d}{repeat}", "latency_samples_ms": samples,
         "throughput": global_batch * len(samples) / (sum(samples) / 1e3),
         "cell_key": f"cls|pvt_tiny|64|train|{batch}", "settings_id": "S", "config_id": f"C{world}"}
    return r | extra


def test_weak_same_threads_per_rank_is_throughput_over_n_times_base():
    base, two = rec(1, 100.0, threads=2), rec(2, 125.0, threads=2)  # per rank: 2 images in 125 ms
    got = derived.study_efficiency([two], [base, two])
    assert got.basis == "same-threads-per-rank" and got.factor == 2
    assert got.efficiency == pytest.approx(two["throughput"] / (2 * base["throughput"]))
    assert got.efficiency == pytest.approx(0.8, rel=0.02)
    assert got.ci95[0] < got.efficiency < got.ci95[1]


def test_weak_same_total_threads_is_the_speed_up():
    base, two = rec(1, 100.0, threads=2), rec(2, 125.0, threads=1)
    got = derived.study_efficiency([two], [base, two])
    assert got.basis == "same-total-threads" and got.factor == 1
    assert got.efficiency == pytest.approx(two["throughput"] / base["throughput"])


def test_strong_matches_the_same_global_batch_and_is_speed_up_over_n():
    """Strong: the N=1 base has batch B, the N=2 cell B/2 per rank; they match by the global batch."""
    base = rec(1, 100.0, batch=4, scaling="strong", threads=2)
    two = rec(2, 60.0, batch=2, scaling="strong", threads=2)
    decoy = rec(1, 50.0, batch=2, scaling="strong", threads=2)  # the same per-rank batch: not the base
    got = derived.study_efficiency([two], [decoy, base, two])
    assert base["global_batch"] == two["global_batch"] == 4
    speed_up = two["throughput"] / base["throughput"]
    assert got.efficiency == pytest.approx(speed_up / 2)
    assert got.efficiency == pytest.approx(100 / 60 / 2, rel=0.02)
    # weak never takes a strong base, nor the other way round
    assert derived.match_base([base], rec(2, 60.0, batch=4, threads=2)) is None


@pytest.mark.parametrize("field, other", [("precision", "amp-bf16"), ("device_name", "cpu-y"), ("res", "96"),
                                          ("model", "resnet18"), ("mode", "infer"), ("compile", True)])
def test_a_base_differing_in_a_setting_is_not_matched(field, other):
    assert derived.match_base([rec(1, 100.0, **{field: other})], rec(2, 120.0)) is None


def test_the_engine_does_not_matter_for_the_base():
    assert derived.match_base([rec(1, 100.0, engine="none")], rec(2, 120.0)) is not None


def test_ci_over_repeats_and_order_independence():
    """Several repeats a side: the hierarchical bootstrap; shuffling the records changes nothing."""
    history = [rec(1, 100.0, repeat=k) for k in range(3)] + [rec(2, 125.0, repeat=k) for k in range(3)]
    cell = [r for r in history if r["world_size"] == 2]
    first = derived.study_efficiency(cell, history)
    for seed in range(3):
        shuffled = history[:]
        random.Random(seed).shuffle(shuffled)
        again = derived.study_efficiency(list(reversed(cell)), shuffled)
        assert again == first
    assert first.ci95[0] < first.efficiency < first.ci95[1]


def test_write_time_field_uses_the_same_rule():
    """derived.scaling (the record field) now finds strong-scaling bases too (it compared the
    per-rank batch only, so a strong cell had no efficiency)."""
    base = rec(1, 100.0, batch=4, scaling="strong")
    two = rec(2, 60.0, batch=2, scaling="strong")
    got = derived.scaling([base], two, "R")
    assert got["scaling_basis"] == "same-threads-per-rank"
    assert got["scaling_efficiency"] == pytest.approx(two["throughput"] / base["throughput"] / 2)
    assert derived.scaling([base], two, "other-run")["scaling_efficiency"] is None


# --------------------------------------------------------------------------- the report section
def _run(records: list[dict]) -> Run:
    return Run(Path("R"), {}, records, run_id="R")


def test_section_only_with_two_world_sizes():
    assert not is_study([rec(1, 100.0)])
    assert study_section([_run([rec(1, 100.0), rec(1, 90.0, batch=4, cell_key="k4")])]) == ([], [], [])
    statements, tables, plots = study_section([_run([rec(1, 100.0), rec(2, 125.0)])])
    assert len(tables) == 1 and len(plots) == 2 and len(statements) == 1
    table = tables[0].to_frame()
    assert list(table["world size"]) == ["1", "2"]
    assert table["efficiency"].iloc[1] == "80%" and "–" in table["efficiency 95% CI"].iloc[1]
    assert list(table["exposed communication"]) == ["-", "-"]  # no comm_exposed_share in the records
    for make in plots:
        assert make[2](None) is not None  # both figures draw


def test_statements_read_as_advice():
    rows = run_rows(_run([rec(1, 100.0), rec(2, 125.0, comm_exposed_share=0.38)]))
    text = statement(rows[1])
    assert text.startswith("pvt_tiny@64 train: 2 ranks give 80% (CI ") and "of ideal" in text
    assert "38% of each step is exposed communication" in text
    ideal = run_rows(_run([rec(1, 100.0), rec(2, 100.0, n=8)]))  # the same step at 2 ranks: 100% of ideal
    assert "scale ideally within the noise" in statement(ideal[1])
    assert study_table(rows).rows[1][-1].text == "38%"


def test_section_reads_every_repeat_from_the_run_directory(tmp_path):
    """The loaded run keeps the latest record per cell only; the section's CI is over every
    repeat, read from the run directory (with one repeat a side the basis would be within-run)."""
    from bench.report.load import load_runs

    records = [rec(w, ms, repeat=k) for w, ms in ((1, 100.0), (2, 125.0)) for k in range(3)]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run,) = load_runs([tmp_path])
    assert len(run.records) == 2  # latest per cell
    rows = run_rows(run)
    want = derived.study_efficiency([r for r in records if r["world_size"] == 2], records)
    assert rows[1].efficiency == want and want.ci95 is not None


def test_statement_says_when_the_figures_are_doubtful():
    rows = run_rows(_run([rec(1, 100.0, flags=["time-cap", "few-samples"]), rec(2, 125.0)]))
    assert "doubtful, the cell or its base is flagged time-cap, few-samples" in statement(rows[1])
    assert "doubtful" not in statement(run_rows(_run([rec(1, 100.0), rec(2, 125.0)]))[1])


def test_world_sizes_of_one_cell_never_pool_as_repeats():
    """A study keeps one cell at several world sizes in one run directory, under one settings_id:
    the report's estimates and bench compare group by identity_key, which must tell them apart."""
    from bench.stats import cell_groups, identity_key

    one = {"cell_key": "cls|resnet18|64|train|1", "settings_id": "s", "world_size": 1}
    two = dict(one, world_size=2)
    two_nodes = dict(one, world_size=2, nodes=2)
    keys = {identity_key(r) for r in (one, two, two_nodes)}
    assert len(keys) == 3
    assert identity_key(one) == ("cls|resnet18|64|train|1", "s")  # single-rank identities as before
    assert len(cell_groups([one, two, dict(two), two_nodes])) == 3


def test_on_cuda_each_rank_brings_a_gpu_so_efficiency_divides_by_n():
    """The world-size-1 run got all the cores and each of 2 ranks half: on CPU that is the
    same-total-threads basis (factor 1), but on CUDA the resource is the GPU (factor N)."""
    gpu = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}
    base, two = rec(1, 100.0, threads=16, **gpu), rec(2, 105.0, threads=8, **gpu)  # 2 GPUs at ~95%
    got = derived.study_efficiency([two], [base, two])
    assert got.basis == derived.GPU_BASIS and got.factor == 2
    assert got.efficiency == pytest.approx(two["throughput"] / (2 * base["throughput"]))
    assert got.efficiency == pytest.approx(100 / 105, rel=0.02)
    assert got.ci95[0] < got.efficiency < got.ci95[1] < 1
    written = derived.scaling([base, two], two, run_id="R")  # the record's field: the same rule
    assert written["scaling_basis"] == derived.GPU_BASIS
    assert written["scaling_efficiency"] == pytest.approx(got.efficiency)
    # the same threads per rank on CUDA: still the GPU basis
    assert derived.match_base([rec(1, 100.0, threads=8, **gpu)], two)[1] == derived.GPU_BASIS
