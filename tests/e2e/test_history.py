"""`bench history` on the committed example runs under results/: one cell followed over the five
2026-11-28 runs that share its identity, the verdict of every step, the known false alarm between
two identical runs (vit_s 224 infer, main-cpu-a -> main-cpu-b: 63.3 -> 90.9 ms) exits 1, several
identities over results/* are refused in one line, and --out draws a PNG."""
from __future__ import annotations

import json

from conftest import REPO, run_bench

from bench.stats import VERDICTS

RESULTS = REPO / "results"
# The 2026-11-28 runs on the AMD EPYC machine that share the fp32 cells' config_id, oldest first.
SAME_CELLS = ["20261128-main-cpu-a", "20261128-main-cpu-b", "20261128-092058-vm-17d444",
              "20261128-121315-vm-461a27", "20261128-151215-vm-1cf9fb"]
PVT_800 = ("--model", "pvt_small", "--res", "800", "--mode", "train")


def _dirs(names):
    return [str(RESULTS / n) for n in names]


def test_history_follows_pvt_small_800_train_over_five_runs_in_time_order():
    proc = run_bench("history", *_dirs(reversed(SAME_CELLS)), *PVT_800, "--format", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    h = json.loads(proc.stdout)
    assert h["cell_key"] == "cls|pvt_small|800|train|1"
    assert [p["run_dir"] for p in h["points"]] == _dirs(SAME_CELLS)
    assert [p["timestamp"] for p in h["points"]] == sorted(p["timestamp"] for p in h["points"])
    assert h["points"][0]["step"] is None
    assert all(p["step"]["verdict"] in VERDICTS for p in h["points"][1:])
    assert all(p["ci"][0] < p["estimate"] < p["ci"][1] for p in h["points"])
    assert all(p["git_commit"] and p["torch"].startswith("2.") for p in h["points"])


def test_the_table_prints_each_steps_verdict():
    proc = run_bench("history", *_dirs(SAME_CELLS), *PVT_800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln for ln in proc.stdout.splitlines() if "│" in ln and "results/" in ln]
    assert len(rows) == 5
    assert all(any(v in row for v in VERDICTS) for row in rows[1:])


def test_a_slower_newest_step_exits_1_on_real_records():
    """Two identical runs of the main job where one repeat gave vit_s 224 infer a false alarm
    (README: the reason for --repeats): as bench compare, history calls it slower and exits 1."""
    proc = run_bench("history", *_dirs(SAME_CELLS[:2]), "--model", "vit_s", "--res", "224", "--mode", "infer",
                     "--format", "md")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "**slower**" in proc.stdout.splitlines()[-1]


def test_results_star_with_several_identities_is_one_line_exit_2():
    proc = run_bench("history", *map(str, sorted(p for p in RESULTS.iterdir() if p.is_dir())), *PVT_800)
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1 and "cell identities match" in err[0] and "--dtype" in err[0] and not proc.stdout


def test_results_star_narrowed_gives_the_history_and_out_writes_a_png(tmp_path):
    out = tmp_path / "pvt_small-800-train.png"
    every = [str(p) for p in sorted(RESULTS.iterdir()) if p.is_dir()]
    proc = run_bench("history", *every, *PVT_800, "--dtype", "fp32", "--device-name", "AMD EPYC", "--by", "commit",
                     "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert "that hold no run" in proc.stderr and "agreement-grid-cpu" in proc.stderr  # results/ holds notes too
