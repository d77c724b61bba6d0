"""The guarantees of the layout: one config (and config files), one record schema, one sweep
(resume identity, rank-0 to-do list, duplicate cells, latest record wins), and the import
directions of pyproject.toml's [tool.importlinter] contracts, checked by import-linter."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from conftest import REPO, run_bench

from bench.config import RunConfig, identity, identity_id, parse_command
from bench.errors import BadInput
from bench.plan import Cell, make_cells
from bench.record import (
    FIELDS,
    SCHEMA_VERSION,
    RunDir,
    SchemaError,
    check_record,
    latest_by_cell,
    read_records_counted,
    upgrade,
)

QUICK = ["--budget", "0.1", "--max-time", "3", "--no-report"]


# ------------------------------------------------------------------------------------ config


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    cfg_file = tmp_path / "sweep.yaml"
    cfg_file.write_text("models: [resnet18, pvt_tiny]\nres: [64, 96]\nmodes: infer\nchannels-last: true\nbudget: 0.5\n")
    _, cfg, _ = parse_command(["run", "--config", str(cfg_file), "--res", "128"])
    assert cfg.models == ["resnet18", "pvt_tiny"]
    assert cfg.res == [(128, 128)]  # the flag wins over the file
    assert cfg.modes == ["infer"] and cfg.channels_last and cfg.budget == 0.5
    cfg_file.write_text(json.dumps({"models": "resnet18", "no_such_option": 1}))
    with pytest.raises(BadInput, match="unknown option 'no_such_option'"):
        parse_command(["run", "--config", str(cfg_file)])


@pytest.mark.parametrize("argv, fragment", [
    (["run", "--models", "resnet18", "--res", "64_0"], "bad resolution '64_0'"),
    (["run", "--models", "resnet18", "--res", "+64"], "bad resolution '+64'"),
    (["run", "--models", "resnet18", "--res", "６４"], "bad resolution"),
    (["run", "--models", "resnet18", "--batch", "٣"], "bad batch size"),
    (["run", "--models", "resnet18", "--budget", "nan"], "bad --budget 'nan'"),
    (["run", "--models", "resnet18", "--budget", "inf"], "bad --budget 'inf'"),
    (["run", "--models", "resnet18", "--grad-clip", "-1"], "bad --grad-clip '-1'"),
    (["run", "--models", "resnet18", "--grad-clip", "nan"], "bad --grad-clip 'nan'"),
    (["run", "--models", "resnet18", "--timeout", "0"], "bad --timeout '0'"),
    (["run", "--models", "resnet18", "--engine", "none", "--nproc", "2", "--modes", "train"], "--engine ddp"),
])
def test_strict_numbers_and_combinations(argv, fragment):
    with pytest.raises(BadInput, match=None) as info:
        parse_command(argv)
    assert fragment in str(info.value.message)


def test_identity_covers_every_measuring_setting_without_a_second_list():
    base = RunConfig(models=["resnet18"])
    runtime = {"world_size": 1, "device_name": "cpu x", "device_count": 1, "threads": 2}
    ids = {identity_id(identity(base, True, runtime))}
    for change in ({"channels_last": True}, {"compile": True}, {"dtype": "bf16"}, {"tf32": False},
                   {"budget": 3.0}, {"max_time": 99.0}, {"engine": "ddp"}, {"grad_clip": 1.0}):
        ids.add(identity_id(identity(RunConfig(models=["resnet18"], **change), True, runtime)))
    assert len(ids) == 9
    for key, value in (("threads", 1), ("world_size", 2), ("device_name", "other cpu")):
        assert identity_id(identity(base, True, {**runtime, key: value})) not in ids
    # Inference cells don't depend on the training engine.
    assert identity(RunConfig(models=["r"], engine="ddp"), False, runtime) == identity(base, False, runtime)
    # Settings that don't change a measurement stay out.
    assert identity(RunConfig(models=["r"], out="x", no_report=True), True, runtime) == identity(base, True, runtime)


def test_duplicate_cells_collapse():
    cells = make_cells(["resnet18"], [(64, 64)], ["infer", "infer"], [1, 1])
    assert cells == [Cell("resnet18", 64, 64, "infer", 1)]
    _, cfg, _ = parse_command(["run", "--models", "resnet18,resnet18", "--res", "64,64", "--modes", "infer,infer"])
    assert (cfg.models, cfg.res, cfg.modes) == (["resnet18"], [(64, 64)], ["infer"])


# ------------------------------------------------------------------------------------ schema


def test_schema_round_trip_and_unknown_fields(tmp_path):
    rec = check_record({"model": "resnet18", "res": "64", "latency_ms": 1.5, "flags": ["time-cap"], "status": "ok"})
    assert rec["schema_version"] == SCHEMA_VERSION
    run = RunDir(tmp_path).create()
    run.append(rec)
    (back,) = run.records()
    assert back == rec
    with pytest.raises(SchemaError, match="latency_millis"):
        check_record({"model": "x", "latency_millis": 1.0})
    assert all(f.metadata["kind"] in ("cell", "setting", "measure", "provenance") for f in FIELDS.values())


def test_records_are_strict_json(tmp_path):
    with pytest.raises(ValueError):
        RunDir(tmp_path).create().append({"grad_clip": float("nan")})
    assert not (tmp_path / "records.jsonl").exists() or (tmp_path / "records.jsonl").read_text() == ""


def test_older_records_are_read():
    v1 = {"model": "pvt_small", "res": "224", "mode": "train", "dtype": "bf16", "engine": "deepspeed"}
    up = upgrade(v1)
    assert up["schema_version"] == 1 and up["kind"] == "run" and up["task"] == "cls"
    assert up["precision"] == "bf16-weights"  # v1 DeepSpeed cast the whole model
    assert upgrade({**v1, "engine": "ddp"})["precision"] == "amp-bf16"
    assert upgrade({"model": "x", "mode": "seg"})["kind"] == "finetune"


def test_latest_record_wins():
    old = {"cell_key": "k", "config_id": "c", "timestamp": "2026-01-01T10:00:00.100000+0000", "throughput": 1.0}
    new = {**old, "timestamp": "2026-01-01T10:00:00.900000+0000", "throughput": 2.0}
    other = {**old, "config_id": "d"}
    kept = latest_by_cell([new, old, other])
    assert sorted(r["throughput"] for r in kept) == [1.0, 2.0]
    assert next(r for r in kept if r["config_id"] == "c")["throughput"] == 2.0


def test_report_uses_the_latest_record_of_a_retried_cell(tmp_path):
    from bench.report.load import load_runs, records_frame

    base = {"kind": "run", "model": "resnet18", "res": "64", "mode": "infer", "batch": 1, "status": "ok",
            "cell_key": "cls|resnet18|64|infer|1", "config_id": "c", "latency_ms": 5.0, "throughput": 200.0}
    run = RunDir(tmp_path).create()
    run.append(check_record({**base, "timestamp": "2026-01-01T10:00:00.500000+0000", "throughput": 100.0}))
    run.append(check_record({**base, "timestamp": "2026-01-01T10:00:00.700000+0000"}))
    df = records_frame(load_runs([tmp_path]))
    assert list(df["throughput"]) == [200.0]


def test_report_shows_settings_that_vary(tmp_path):
    from bench.report.load import load_runs, records_frame
    from bench.report.tables import perf_tables

    base = {"kind": "run", "model": "resnet18", "res": "64", "mode": "infer", "batch": 1, "status": "ok",
            "latency_ms": 5.0, "throughput": 200.0, "compile": False, "threads": 2}
    run = RunDir(tmp_path).create()
    run.append(check_record({**base, "cell_key": "a", "config_id": "1", "channels_last": False}))
    run.append(check_record({**base, "cell_key": "a", "config_id": "2", "channels_last": True}))
    (table,) = perf_tables(records_frame(load_runs([tmp_path])))
    assert "channels last" in table.columns and "compile" not in table.columns


# ------------------------------------------------------------------------------------ sweep


@pytest.mark.e2e
def test_resume_identity_measures_changed_settings_and_skips_identical(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--models", "resnet18", "--res", "64", "--modes", "infer", *QUICK, "--out", str(out)]
    first = run_bench(*args)
    assert first.returncode == 0, first.stderr
    again = run_bench(*args)
    assert again.returncode == 0 and "skipping 1 finished cells" in again.stderr
    cl = run_bench(*args, "--channels-last")
    assert cl.returncode == 0, cl.stderr
    assert "skipping" not in cl.stderr
    records = RunDir(out).records()
    assert [r["channels_last"] for r in records] == [False, True]
    assert len({r["config_id"] for r in records}) == 2
    # Every invocation that passed validation is recorded, and each record names its own.
    invocations = [json.loads(ln) for ln in (out / "invocations.jsonl").read_text().splitlines()]
    assert len(invocations) == 3 and "--channels-last" in invocations[2]["command"]
    assert records[1]["invocation"] == invocations[2]["invocation"]


class _Outcome:
    """A scenario's typed result as the sweep sees it (sweep.CellOutcome): it turns into its record."""

    def __init__(self, record: dict):
        self.record = record

    def to_record(self) -> dict:
        return self.record


class _CountingScenario:
    """Two cells; records which ones this rank ran."""

    def __init__(self, out):
        self.config = RunConfig(models=["resnet18"], out=str(out))
        self.ran: list[str] = []

    def cells(self):
        return [Cell("resnet18", 64, 64, "infer", 1), Cell("resnet18", 96, 96, "infer", 1)]

    def prepare(self, ctx, run_dir, todo):
        pass

    def run(self, cell, ctx, history):
        self.ran.append(cell.key)
        return _Outcome({**cell.as_dict(), "status": "ok"})

    def summarize(self, records, run_dir, ctx, console):
        pass


def _rank_main(rank: int, out: str, port: int, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    from rich.console import Console

    from bench.launch.context import init_distributed, shutdown
    from bench.sweep import run_sweep, runtime_identity

    ctx = init_distributed("cpu", timeout_s=60)
    scenario = _CountingScenario(out)
    if rank == 1:  # rank 1 sees a directory where every cell is already done, with its real ids
        done_id = identity_id({**identity(scenario.config, False, runtime_identity(ctx)), "cell": None})
        RunDir.records = lambda self: [{"cell_key": c.key, "config_id": done_id, "status": "ok"}
                                       for c in scenario.cells()]
    try:
        run_sweep(scenario, ctx, Console(quiet=True))
    finally:
        shutdown(ctx)
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(scenario.ran))


@pytest.mark.multiproc
def test_rank0_decides_the_todo_list_and_broadcasts_it(tmp_path):
    from bench.launch.context import free_port

    out = tmp_path / "run"
    RunDir(out).create().append({"cell_key": "cls|resnet18|64|infer|1", "config_id": "stale", "status": "ok"})
    mp.spawn(_rank_main, args=(str(out), free_port(), str(tmp_path)), nprocs=2, join=True)
    ran = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ran[0] == ran[1] == ["cls|resnet18|64|infer|1", "cls|resnet18|96|infer|1"]
    assert len(read_records_counted(out / "records.jsonl")[0]) == 3  # rank 0 alone wrote


# ------------------------------------------------------------------------------------ layers

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # import-linter, in the test extra


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter over the packages under ``root``, with the contracts of ``root``'s
    pyproject.toml. PYTHONPATH puts ``root`` first, so a copy is checked, not the installed tree."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.e2e
def test_imports_follow_the_layers_in_pyproject():
    """The allowed directions are written once ([tool.importlinter] in pyproject.toml) and hold:
    no lower layer imports a higher one (function-level imports included), models never import
    bench, and every module under bench/ is placed in a layer."""
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: pip install -e '.[test]'"
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "2 kept" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.e2e
@pytest.mark.parametrize("module, source, broken", [
    # a launcher that reaches up into the sweep (a lazy import counts too)
    ("bench/launch/upward.py", "def f():\n    from bench.sweep import run_sweep\n    return run_sweep\n",
     "bench.launch is not allowed to import bench.sweep"),
    # a scenario that reaches up into a command (as step.py once rendered the report)
    ("bench/scenarios/upward.py", "from bench.commands.run import render_run_report\n",
     "bench.scenarios is not allowed to import bench.commands"),
    # two independent siblings
    ("bench/measure/sideways.py", "import bench.engines\n", "bench.measure is not allowed to import bench.engines"),
    # a model that knows the harness
    ("models/upward.py", "import bench.errors\n", "models know nothing of the harness"),
    # a new top-level module nobody placed in a layer
    ("bench/unplaced.py", "X = 1\n", "bench.unplaced"),
])
def test_the_layer_check_bites(tmp_path, module, source, broken):
    """The checker is not vacuous: in a copy of the tree, one upward (or sideways, or unplaced)
    import breaks the contract and lint-imports exits non-zero naming it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("bench", "models"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    assert _lint_imports(tmp_path).returncode == 0  # the copy alone is clean
    (tmp_path / module).write_text(source)
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-3000:]
    assert broken in " ".join(proc.stdout.split()), proc.stdout[-3000:]


def test_deepspeed_config_of_the_wrong_type_is_bad_input_before_measuring(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text('{"zero_optimization": {"overlap_comm": "maybe"}}')
    with pytest.raises(BadInput, match="DeepSpeed rejects the config"):
        parse_command(["run", "--models", "resnet18", "--modes", "train", "--engine", "deepspeed",
                       "--ds-config", str(bad)])
    bad.write_text('{"train_micro_batch_size_per_gpu": "abc"}')
    with pytest.raises(BadInput, match="DeepSpeed rejects the config"):
        parse_command(["run", "--models", "resnet18", "--modes", "train", "--engine", "deepspeed",
                       "--ds-config", str(bad)])
