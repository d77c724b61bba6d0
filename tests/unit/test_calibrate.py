"""`bench calibrate`'s command line (issue 29): bad input is one line, exit 2, nothing created;
the calibration file round-trips (written, found by its machine key, its figures read back)."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench import stats
from bench.commands.calibrate import calibrate_command
from bench.measure import calibration as C


def _record(centre: float, repeat: int, invocation: str, seed: int, device_name: str = "Test CPU") -> dict:
    s = [float(x) for x in centre * (1 + 0.01 * np.random.default_rng(seed).standard_normal(30))]
    return {"schema_version": 2, "kind": "run", "status": "ok", "task": "cls", "model": "resnet18", "res": "64",
            "height": 64, "width": 64, "mode": "infer", "batch": 1, "global_batch": 1, "world_size": 1,
            "engine": "none", "dtype": "fp32", "precision": "fp32", "device": "cpu", "device_name": device_name,
            "threads": 1, "cell_key": "cls|resnet18|64|infer|1", "config_id": "cfg1", "settings_id": "s1",
            "latency_ms": float(np.median(s)), "iters": len(s), "latency_samples_ms": s,
            "timestamp": f"2026-03-01T10:0{repeat}:00.000000+0000", "repeat": repeat, "repeats": 2,
            "invocation": invocation}


def _run(root, name: str, centres: tuple[float, float], seed: int, device_name: str = "Test CPU"):
    """A run directory of one process (invocation) that measured one cell twice (2 repeats)."""
    d = root / name
    d.mkdir()
    inv = f"inv-{name}"
    recs = [_record(c, r, inv, seed + r, device_name) for r, c in enumerate(centres)]
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "invocations.jsonl").write_text(json.dumps({"invocation": inv, "torch": "2.6.0", "nproc": 2}) + "\n")
    return d


def _calibrate(*args: str):
    return CliRunner().invoke(calibrate_command, list(args))


def _one_line_exit_2(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_from_a_folder_that_is_not_a_run_directory_is_refused_and_nothing_is_written(tmp_path):
    run = _run(tmp_path, "a", (10.0, 10.2), 1)
    notes = tmp_path / "notes"
    notes.mkdir()
    out = tmp_path / "cal"
    _one_line_exit_2(_calibrate("--from", str(run), "--from", str(notes), "--out", str(out)), "not a run directory")
    _one_line_exit_2(_calibrate("--from", str(run / "records.jsonl"), "--out", str(out)), "not a run directory")
    assert not out.exists()


def test_runs_of_different_machines_mixed_are_refused_and_nothing_is_written(tmp_path):
    a = _run(tmp_path, "a", (10.0, 10.2), 1)
    b = _run(tmp_path, "b", (10.5, 10.4), 3)
    other = _run(tmp_path, "other", (20.0, 20.3), 5, device_name="Other CPU")
    out = tmp_path / "cal"
    result = _calibrate("--from", str(a), "--from", str(b), "--from", str(other), "--out", str(out))
    _one_line_exit_2(result, "2 machines")
    assert "other-cpu" in result.output and "test-cpu" in result.output
    assert not out.exists()


@pytest.mark.parametrize("runs", ["0", "1"])
def test_runs_below_two_is_one_line_exit_2_from_the_bench_command(tmp_path, monkeypatch, capsys, runs):
    """Through bench's own entry point (click's usage error made one line), before anything is measured."""
    from bench.cli import entry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench", "calibrate", "--runs", runs, "--out", str(tmp_path / "cal")])
    with pytest.raises(SystemExit) as exc:
        entry()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--runs" in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_out_is_refused_before_anything_is_measured(tmp_path):
    a, b = _run(tmp_path, "a", (10.0, 10.2), 1), _run(tmp_path, "b", (10.5, 10.4), 3)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # root writes into any folder but /proc's
    target = Path("/proc") / f"bench-calibration-{os.getpid()}" if os.geteuid() == 0 else locked / "cal"
    try:
        _one_line_exit_2(_calibrate("--from", str(a), "--from", str(b), "--out", str(target)), "not writable")
        # measuring now would first spend minutes in bench run: refused before the first run starts
        result = _calibrate("--out", str(target), "--models", "resnet18", "--res", "32", "--modes", "infer")
        _one_line_exit_2(result, "not writable")
        assert "calibrate: run" not in result.output
        assert not target.exists() and list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_an_out_under_a_file_is_refused(tmp_path):
    a, b = _run(tmp_path, "a", (10.0, 10.2), 1), _run(tmp_path, "b", (10.5, 10.4), 3)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_exit_2(_calibrate("--from", str(a), "--from", str(b), "--out", str(blocker / "cal")), "under a file")
    assert blocker.read_text() == "x"


def test_the_calibration_file_round_trips(tmp_path):
    """Written by the command, found by the runs' machine key, its figures those of the runs:
    the variance components of the log repeat medians (block within a process, process between)."""
    centres = {"a": (10.0, 10.3), "b": (11.0, 10.8), "c": (9.6, 9.9)}
    runs = [_run(tmp_path, name, cs, 10 * i) for i, (name, cs) in enumerate(centres.items())]
    out = tmp_path / "cal"
    result = _calibrate(*[x for r in runs for x in ("--from", str(r))], "--out", str(out))
    assert result.exit_code == 0, result.output
    key = C.key_of(C.read_run(runs[0]))
    assert key is not None and key.device_name == "Test CPU" and key.cpus == 2 and key.torch == "2.6.0"
    assert [p.name for p in out.iterdir()] == [f"{key.slug}.json"] and str(out / f"{key.slug}.json") in result.output
    cal = C.find(key, [out])
    assert cal is not None and cal.key == key and cal.cells == 1 and sorted(cal.runs) == sorted(map(str, runs))
    logs = []
    for r in runs:
        recs = [json.loads(line) for line in (r / "records.jsonl").read_text().splitlines()]
        logs.append([math.log(float(np.median(x["latency_samples_ms"]))) for x in recs])
    expected = stats.nested_variance_components(logs, C.LEVELS)
    assert cal.process == pytest.approx(float(expected.variances[1])) and cal.process > 0
    assert cal.block == pytest.approx(float(expected.variances[0])) and cal.block > 0
    assert (cal.df_process, cal.df_block) == (int(expected.df[1]), int(expected.df[0])) == (2, 3)
    assert f"sd {C.sd_percent(cal.process)}" in result.output
    # the file is what bench compare and history read: another machine's key finds nothing in it
    other = C.MachineKey("Other CPU", 2, 1, "2.6.0", 2)
    assert C.find(other, [out]) is None
