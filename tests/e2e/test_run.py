"""`bench run` end to end on CPU: records, environment, resume, and one-line bad-input errors."""
from __future__ import annotations

import json

import pytest
from conftest import run_bench

from bench.record import read_records_counted

REQUIRED = {"model", "res", "mode", "batch", "device", "dtype", "params", "gmacs", "latency_ms", "throughput",
            "peak_mem_mb", "status", "error", "engine", "world_size", "global_batch", "latency_p90_ms"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    proc = run_bench("run", "--models", "resnet18,pvt_tiny", "--res", "64,64x96", "--batch", "1,2",
                     "--budget", "0.2", "--out", str(out), "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_run_writes_one_valid_record_per_cell(tiny_run):
    out, _ = tiny_run
    records = read_records_counted(out / "records.jsonl")[0]
    keys = sorted((r["model"], r["res"], r["mode"], r["batch"]) for r in records)
    expected = sorted((m, res, mode, b) for m in ("resnet18", "pvt_tiny") for res in ("64", "64x96")
                      for mode in ("infer", "train") for b in (1, 2))
    assert keys == expected
    for r in records:
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert r["status"] == "ok", r["error"]
        assert r["device"] == "cpu" and r["world_size"] == 1 and r["engine"] == "none"
        assert r["latency_p90_ms"] >= r["latency_ms"] > 0
        # sustained: images over the summed time of every kept sample (none thinned at this size)
        assert r["latency_samples_ms"] and len(r["latency_samples_ms"]) == r["iters"] == sum(r["latency_blocks"])
        assert r["throughput"] == pytest.approx(r["batch"] * r["iters"] / (sum(r["latency_samples_ms"]) / 1e3))
        assert r["peak_mem_mb"] > 0 and r["iters"] >= 3
    train = [r for r in records if r["mode"] == "train" and r["model"] == "pvt_tiny"]
    infer = [r for r in records if r["mode"] == "infer" and r["model"] == "pvt_tiny"]
    assert min(t["peak_mem_mb"] for t in train) > max(i["peak_mem_mb"] for i in infer)  # grads + AdamW state


def test_run_records_environment(tiny_run):
    out, _ = tiny_run
    env = json.loads((out / "env.json").read_text())
    for key in ("torch", "cuda", "device_name", "cpu", "hostname", "git_commit", "packages", "command"):
        assert key in env
    assert env["packages"]["timm"] and "--models resnet18,pvt_tiny" in env["command"]


def test_rerun_skips_finished_cells(tiny_run):
    out, _ = tiny_run
    before = (out / "records.jsonl").read_text()
    proc = run_bench("run", "--models", "resnet18", "--res", "64", "--batch", "1,2", "--budget", "0.2",
                     "--out", str(out), "--no-report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipping 4 finished cells" in proc.stderr
    assert (out / "records.jsonl").read_text() == before


@pytest.mark.parametrize("args,needle", [
    (["--models", "pvt_huge"], "unknown model 'pvt_huge'; known models:"),
    (["--models", "resnet18", "--res", "100"], "bad resolution '100'"),
    (["--models", "resnet18", "--res", "-32"], "bad resolution '-32'"),
    (["--models", "resnet18", "--batch", "0"], "bad batch size '0'"),
    (["--models", "resnet18", "--batch", "1,x"], "bad batch size 'x'"),
    (["--models", "resnet18", "--engine", "horovod"], "horovod"),
    (["--models", "resnet18", "--ds-config", "/nonexistent.json"], "DeepSpeed config not found"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    proc = run_bench("run", *args, "--out", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()


def test_malformed_ds_config_is_one_line(tmp_path):
    cfg = tmp_path / "ds.json"
    cfg.write_text("{not json")
    proc = run_bench("run", "--models", "resnet18", "--engine", "deepspeed", "--ds-config", str(cfg))
    assert proc.returncode == 2 and "malformed DeepSpeed config" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_flops_unknown_model_is_one_line(tmp_path):
    proc = run_bench("flops", "--models", "resnet18,nonexistent_net")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "unknown model" in proc.stderr


def test_peak_memory_does_not_depend_on_the_cell_before(tiny_run, tmp_path):
    """A cell's CPU peak must not read low because an earlier cell left freed pages resident."""
    out, _ = tiny_run
    after = next(r for r in read_records_counted(out / "records.jsonl")[0]
                 if (r["model"], r["res"], r["mode"], r["batch"]) == ("pvt_tiny", "64", "train", 1))
    alone_dir = tmp_path / "alone"
    proc = run_bench("run", "--models", "pvt_tiny", "--res", "64", "--modes", "train", "--batch", "1",
                     "--budget", "0.2", "--out", str(alone_dir), "--no-report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (alone,) = read_records_counted(alone_dir / "records.jsonl")[0]
    assert after["peak_mem_mb"] == pytest.approx(alone["peak_mem_mb"], rel=0.25)


def test_run_task_det_measures_the_whole_detector(tmp_path):
    """bench run --task det on CPU at a small size: padded input, parts, NMS timed apart, a step."""
    out = tmp_path / "det"
    proc = run_bench("run", "--task", "det", "--models", "resnet18", "--res", "100x130", "--budget", "0.2",
                     "--max-time", "15", "--no-report", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    infer, train = sorted(read_records_counted(out / "records.jsonl")[0], key=lambda r: r["mode"])
    for rec in (infer, train):
        assert rec["status"] == "ok" and rec["task"] == "det" and rec["res"] == "100x130"
        assert rec["input_hw"] == [128, 160] and rec["bn_mode"] == "frozen"
        assert sum(rec["part_gmacs"].values()) == pytest.approx(rec["gmacs"], rel=1e-9)
    assert set(infer["part_latency_ms"]) == {"backbone", "neck", "head", "postprocess"}
    assert all(v > 0 for v in infer["part_latency_ms"].values())
    assert set(infer["part_latency_ci95_ms"]) == set(infer["part_latency_iters"]) == set(infer["part_latency_ms"])
    # the random head runs at score_thresh=0, so NMS gets each level's top 1000 (at 0.05 it got none)
    assert infer["det_load"] == "score_thresh=0 (random head, worst case)" and infer["nms_candidates"] > 0
    assert train["latency_ms"] > 0 and train["mem_breakdown_mb"]["optimizer"] > 0
