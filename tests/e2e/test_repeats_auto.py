"""`bench run --repeats auto` as a user runs it (issue 29, item 3): with a calibration of this
machine planted where the run looks for one, the run directory ends with as many processes'
repeats as the calibration prices the change at, one repeat per process. The count's other
paths (uncalibrated, the ceiling, refusals) are tests/unit/test_repeats_auto.py's, in process."""
from __future__ import annotations

import os

from conftest import REPO, run_bench

from bench import stats
from bench.measure.calibration import Calibration, MachineKey, save
from bench.record import RunDir


def test_auto_measures_as_many_fresh_processes_as_a_planted_calibration_prices(tmp_path):
    import torch

    from bench.environment import cpu_model
    from bench.record import SCHEMA_VERSION

    # This machine's key as the records will say it (bench.environment / scenarios.common: the CPU
    # model, os.cpu_count(), the rank's threads, torch.__version__, the schema); its noise chosen
    # so that a 20% change costs 2 runs: neither the first run alone nor the uncalibrated 3.
    key = MachineKey(cpu_model(), os.cpu_count(), 1, str(torch.__version__), SCHEMA_VERSION)
    cal = Calibration(key, 0.0016, 40, None, 0, 4, [], "test: planted", "2026-12-06")
    want = stats.runs_needed(cal.noise(), 0.2, stats.default_threshold("cpu"))
    assert want == 2
    # the working directory is tmp_path, so results/calibration is the planted folder, not this
    # checkout's (which holds this machine's real one-thread calibration); PYTHONPATH keeps this tree
    save(cal, tmp_path / "results" / "calibration")
    out = tmp_path / "run"
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    proc = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "infer", "--budget", "0.1",
                     "--max-time", "10", "--threads", "1", "--numerics", "off", "--no-report",
                     "--repeats", "auto", "--change", "0.2", "--out", str(out),
                     cwd=tmp_path, env={"PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = f"auto: 2 runs (calibration results/calibration/{key.slug}.json: a 20% change needs 2 runs per side"
    assert said in proc.stderr, proc.stderr[-3000:]
    assert "no calibration" not in proc.stderr
    records = RunDir(out).records()
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert sorted(r["repeat"] for r in records) == [0, 1]
    assert len({r["invocation"] for r in records}) == 2  # each repeat in a process of its own
    assert not (out / "report.html").exists()  # --no-report holds for the whole run
