"""`bench history` on tiny synthetic run directories: the order of the points (time, commit,
torch version), each step's verdict (bench compare's), the exit code (1 only when the newest step
is slower), the point's interval (bench.stats's bootstrap), provenance, refusals and the plot."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from bench import stats
from bench.commands.history import history_command
from bench.measure.calibration import Calibration, MachineKey, save

CELL = "cls|resnet18|224|infer|1"


def _samples(centre: float, n: int = 40, seed: int = 0, spread: float = 0.01) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(x) for x in centre * (1 + spread * rng.standard_normal(n))]


def _record(centre: float, when: str, seed: int, *, batch: int = 1, config_id: str = "cfg1", repeat: int = 0,
            invocation: str = "inv1", samples: bool = True) -> dict:
    s = _samples(centre, seed=seed)
    rec = {"schema_version": 2, "kind": "run", "status": "ok", "task": "cls", "model": "resnet18", "res": "224",
           "height": 224, "width": 224, "mode": "infer", "batch": batch, "global_batch": batch, "world_size": 1,
           "engine": "none", "dtype": "fp32", "precision": "fp32", "device": "cpu", "device_name": "Test CPU",
           "cell_key": f"cls|resnet18|224|infer|{batch}", "config_id": config_id, "settings_id": "s1",
           "latency_ms": float(np.median(s)), "throughput": 1000 * batch / float(np.median(s)), "iters": len(s),
           "timestamp": when, "repeat": repeat, "repeats": 1, "invocation": invocation}
    if samples:
        rec["latency_samples_ms"] = s
    return rec


def _run(root, name: str, records: list[dict], commit: str = "c" * 40, torch: str = "2.6.0",
         invocation: str = "inv1"):
    d = root / name
    d.mkdir()
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    inv = {"invocation": invocation, "git_commit": commit, "git_dirty": False, "torch": torch,
           "started_at": records[0]["timestamp"] if records else ""}
    (d / "invocations.jsonl").write_text(json.dumps(inv) + "\n")
    return d


def _history(*args: str):
    result = CliRunner().invoke(history_command, [*args, "--model", "resnet18", "--res", "224", "--mode", "infer"])
    return result


def _json(*args: str):
    result = _history(*args, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def _calibrate(folder, sd: float = 0.005, torch: str = "2.6.0"):
    """A calibration of the test machine (the key _run's runs have) in FOLDER/calibration, where
    bench compare and history look beside the older run: run-to-run sd ``sd``."""
    key = MachineKey("Test CPU", None, None, torch, 2)
    return save(Calibration(key, sd ** 2, 30, sd ** 2, 30, 3, ["x"], "test", "2026-03-01"), folder / "calibration")


@pytest.fixture
def three(tmp_path):
    """Three runs of one cell on a calibrated machine: 10 ms, 10 ms (same), then 13 ms (clearly
    slower), passed out of order."""
    a = _run(tmp_path, "a", [_record(10.0, "2026-03-01T10:00:00.000000+0000", 1)], commit="a" * 40)
    b = _run(tmp_path, "b", [_record(10.0, "2026-03-02T10:00:00.000000+0000", 2)], commit="b" * 40)
    c = _run(tmp_path, "c", [_record(13.0, "2026-03-03T10:00:00.000000+0000", 3)], commit="a" * 40)
    _calibrate(tmp_path)
    return a, b, c


def test_points_in_time_order_and_the_newest_slower_step_exits_1(three):
    a, b, c = three
    code, h = _json(str(c), str(a), str(b))
    assert [p["run_dir"] for p in h["points"]] == [str(a), str(b), str(c)]
    assert [p["step"] and p["step"]["verdict"] for p in h["points"]] == [None, "same", "slower"]
    assert code == 1 and h["newest_slower"]
    assert h["points"][2]["step"]["ratio"] == pytest.approx(1.3, rel=0.02)


def test_the_table_marks_each_step(three):
    result = _history(*map(str, three))
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if "│" in ln]
    assert "same" in lines[1] and "slower" in lines[2] and "slower" not in lines[0]


def test_same_newest_exits_0_and_faster_is_not_a_failure(tmp_path):
    _calibrate(tmp_path)
    a = _run(tmp_path, "a", [_record(13.0, "2026-03-01T10:00:00.000000+0000", 1)])
    b = _run(tmp_path, "b", [_record(10.0, "2026-03-02T10:00:00.000000+0000", 2)])
    c = _run(tmp_path, "c", [_record(10.0, "2026-03-03T10:00:00.000000+0000", 3)])
    code, h = _json(str(a), str(b), str(c))
    assert [p["step"] and p["step"]["verdict"] for p in h["points"]] == [None, "faster", "same"]
    assert code == 0 and not h["newest_slower"]


def test_throughput_metric_calls_a_slower_newest_slower(three):
    code, h = _json(*map(str, three), "--metric", "throughput")
    assert h["points"][2]["step"]["verdict"] == "slower" and code == 1
    assert h["points"][2]["estimate"] < h["points"][1]["estimate"]


def test_by_torch_orders_versions_not_strings(tmp_path):
    a = _run(tmp_path, "a", [_record(10.0, "2026-03-01T10:00:00.000000+0000", 1)], torch="2.9.0")
    b = _run(tmp_path, "b", [_record(10.0, "2026-03-02T10:00:00.000000+0000", 2)], torch="2.10.0")
    c = _run(tmp_path, "c", [_record(13.0, "2026-03-03T10:00:00.000000+0000", 3)], torch="2.11.0")
    _, h = _json(str(c), str(b), str(a), "--by", "torch")
    assert [p["torch"] for p in h["points"]] == ["2.9.0", "2.10.0", "2.11.0"]  # "2.10" < "2.9" as strings


def test_by_commit_keeps_a_commits_runs_together_in_time_order(three):
    a, b, c = three  # a and c share commit aaaa..., b is bbbb... measured between them
    _, h = _json(str(a), str(b), str(c), "--by", "commit")
    assert [p["run_dir"] for p in h["points"]] == [str(a), str(c), str(b)]
    assert [p["git_commit"][0] for p in h["points"]] == ["a", "a", "b"]


def test_the_point_is_the_median_with_the_stats_bootstrap_interval_and_its_provenance(three):
    a, _, _ = three
    _, h = _json(str(a))
    p = h["points"][0]
    rec = json.loads((a / "records.jsonl").read_text())
    t = stats.Timings.from_records([rec])
    assert p["estimate"] == pytest.approx(float(np.median(rec["latency_samples_ms"])))
    assert p["ci"] == pytest.approx(list(stats.estimate_ci(t, "latency", 0)))
    assert p["ci"][0] < p["estimate"] < p["ci"][1]
    assert (p["git_commit"], p["torch"], p["samples"], p["step"]) == ("a" * 40, "2.6.0", 40, None)


def test_repeats_give_a_hierarchical_interval_over_every_repeat(tmp_path):
    recs = [_record(10.0 + r, f"2026-03-01T10:0{r}:00.000000+0000", r, repeat=r) for r in range(3)]
    d = _run(tmp_path, "a", recs)
    _, h = _json(str(d))
    p = h["points"][0]
    assert p["repeats"] == 3 and p["samples"] == 120
    assert p["estimate"] == pytest.approx(np.mean([np.median(r["latency_samples_ms"]) for r in recs]))
    assert p["ci"][1] - p["ci"][0] > 1.0  # the spread between the repeats, not only within one


def test_estimate_ci_needs_two_samples():
    t = stats.Timings(((5.0,),), 1)
    assert all(math.isnan(x) for x in stats.estimate_ci(t))


def test_records_without_samples_are_points_without_a_verdict(tmp_path):
    a = _run(tmp_path, "a", [_record(10.0, "2026-03-01T10:00:00.000000+0000", 1, samples=False)])
    b = _run(tmp_path, "b", [_record(13.0, "2026-03-02T10:00:00.000000+0000", 2)])
    code, h = _json(str(a), str(b))
    assert h["points"][1]["step"]["verdict"] == "no samples" and code == 0
    assert h["points"][0]["estimate"] == pytest.approx(10.0, rel=0.05)  # the record's own latency_ms


def test_several_identities_are_refused_in_one_line_naming_the_option(tmp_path):
    a = _run(tmp_path, "a", [_record(10.0, "2026-03-01T10:00:00.000000+0000", 1),
                             _record(20.0, "2026-03-01T11:00:00.000000+0000", 2, batch=2, config_id="cfg2")])
    result = _history(str(a))
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and "2 cell identities" in line and "--batch" in line and "cfg2" in line
    code, h = _json(str(a), "--batch", "2")
    assert h["cell_key"] == "cls|resnet18|224|infer|2" and code == 0


@pytest.mark.parametrize("args, needle", [
    (["--out", "x.txt"], ".png"),
    (["--res", "224,512"], "one size"),
    (["--threshold", "2"], "between 0 and 1"),
    (["--model", "vit_s"], "no finished"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(three, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(history_command, [*map(str, three), "--model", "resnet18", "--res", "224",
                                                  "--mode", "infer", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.txt").exists()


def test_missing_directory_is_bad_input(tmp_path):
    result = _history(str(tmp_path / "nope"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_folder_without_records_among_runs_is_passed_over(three, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    code, h = _json(*map(str, three), str(notes))
    assert len(h["points"]) == 3 and code == 1


@pytest.mark.parametrize("suffix", [".png", ".svg", ".html"])
def test_out_draws_the_plot(three, tmp_path, suffix):
    out = tmp_path / f"history{suffix}"
    result = _history(*map(str, three), "--out", str(out))
    assert result.exit_code == 1 and out.is_file() and out.stat().st_size > 1000
    if suffix == ".png":
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if suffix == ".html":
        text = out.read_text()
        assert "data:image/png;base64," in text and "v-slower" in text


def test_a_one_process_step_without_calibration_is_inconclusive_and_exits_0(tmp_path):
    """bench compare's rule: one process per side and no calibration of this device cannot know the
    run-to-run noise, so even a 30% step within the runs is inconclusive (not slower: exit 0)."""
    a = _run(tmp_path, "a", [_record(10.0, "2026-03-01T10:00:00.000000+0000", 1)])
    b = _run(tmp_path, "b", [_record(13.0, "2026-03-02T10:00:00.000000+0000", 2)])
    code, h = _json(str(a), str(b))
    step = h["points"][1]["step"]
    assert step["verdict"] == "inconclusive" and step["p"] is None and code == 0
    assert "within-run interval only" in step["basis"] and "No calibration for this machine" in step["calibration"]
    code, h = _json(str(a), str(b), "--within-run")  # the old within-run rule, asked for
    assert h["points"][1]["step"]["verdict"] == "slower" and code == 1


def test_a_calibration_given_or_beside_the_runs_decides_the_step(tmp_path):
    a = _run(tmp_path, "a", [_record(10.0, "2026-03-01T10:00:00.000000+0000", 1)])
    b = _run(tmp_path, "b", [_record(13.0, "2026-03-02T10:00:00.000000+0000", 2)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = _calibrate(elsewhere)
    code, h = _json(str(a), str(b), "--calibration", str(path))
    assert h["points"][1]["step"]["verdict"] == "slower" and code == 1
    assert "calibration" in h["points"][1]["step"]["basis"]
    _calibrate(tmp_path)  # calibration/ beside the older run: found without the option
    code, h = _json(str(a), str(b))
    assert h["points"][1]["step"]["verdict"] == "slower" and code == 1


def test_a_step_across_torch_versions_takes_no_calibration(tmp_path):
    """The calibration holds for one machine key; a torch upgrade between two runs is another."""
    a = _run(tmp_path, "a", [_record(10.0, "2026-03-01T10:00:00.000000+0000", 1)], torch="2.6.0")
    b = _run(tmp_path, "b", [_record(13.0, "2026-03-02T10:00:00.000000+0000", 2)], torch="2.7.0")
    _calibrate(tmp_path)
    code, h = _json(str(a), str(b))
    step = h["points"][1]["step"]
    assert step["verdict"] == "inconclusive" and code == 0 and "differ in machine" in step["calibration"]


def test_a_missing_calibration_path_is_bad_input(three, tmp_path):
    result = _history(*map(str, three), "--calibration", str(tmp_path / "nope.json"))
    assert result.exit_code == 2 and "does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1
