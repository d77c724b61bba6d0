"""The verdict section, from synthetic records with samples: the ranking, the ratio to the fastest
with its interval, ties called ties, the order on the page, and the runs-side-by-side verdicts."""
from __future__ import annotations

import re

import numpy as np
import pytest
from report_page import Page, make_run

from bench.record import check_record
from bench.report import render_report
from bench.report.load import load_runs, records_frame
from bench.report.verdict import rankings, verdict_statements

_clock = iter(range(10**6))


def cell(model: str, res: int, ms: float, n: int = 200, seed: int = 0, jitter: float = 0.005, **fields) -> dict:
    """A finished infer cell at batch 1 whose samples scatter around ``ms``."""
    samples = ms * (1 + jitter * np.random.default_rng(seed).standard_normal(n))
    rec = {
        "kind": "run", "task": "cls", "model": model, "family": model.split("_")[0], "res": str(res),
        "height": res, "width": res, "mode": "infer", "batch": 1, "global_batch": 1,
        "cell_key": f"cls|{model}|{res}x{res}|infer|1", "config_id": f"cfg-{model}-{res}", "settings_id": "s",
        "device": "cpu", "device_name": "Test CPU", "dtype": "fp32", "precision": "fp32", "engine": "none",
        "world_size": 1, "status": "ok", "error": None, "flags": [],
        "timestamp": f"2026-11-28T10:00:00.{next(_clock):06d}+0000",
        "latency_samples_ms": [float(x) for x in samples], "latency_ms": float(np.median(samples)),
        "throughput": 1e3 / float(np.mean(samples)), "peak_mem_mb": 100.0 * ms, "gmacs": ms,
    }
    rec.update(fields)
    return check_record(rec)


def test_a_model_10_percent_slower_ranks_second_with_its_ratio(tmp_path):
    run = make_run(tmp_path / "r", [cell("pvt_tiny", 224, 10.0, seed=1), cell("vit_s", 224, 11.0, seed=2)])
    runs = load_runs([run])
    df = records_frame(runs)
    (ranked,) = rankings(df, runs)
    assert [e.label for e in ranked.entries] == ["pvt_tiny", "vit_s"]
    c = ranked.against_fastest[1]
    assert c.verdict == "slower" and abs(c.ratio - 1 / 1.1) < 0.01 and c.ci[0] < c.ratio < c.ci[1] < 0.95
    (text,) = verdict_statements(df, runs)
    assert re.search(r"pvt_tiny fastest \([0-9.]+ img/s\), vit_s 0\.91× \[0\.9\d, 0\.9\d\]", text), text
    assert "within-run only (1 repeat)" in text
    assert "Peak memory, least first: pvt_tiny 1000 MB, vit_s 1.10×" in text


def test_two_identical_models_are_called_a_tie(tmp_path):
    run = make_run(tmp_path / "r", [cell("pvt_small", 224, 10.0, seed=3), cell("vit_s", 224, 10.0, seed=4)])
    runs = load_runs([run])
    df = records_frame(runs)
    (ranked,) = rankings(df, runs)
    assert ranked.against_fastest[1].verdict == "same"
    (text,) = verdict_statements(df, runs)
    assert re.search(r"(pvt_small and vit_s|vit_s and pvt_small) are within 3% of each other", text), text


def test_noisy_equal_models_cannot_be_told_apart(tmp_path):
    run = make_run(tmp_path / "r", [cell("a_m", 224, 10.0, n=12, seed=5, jitter=0.2),
                                    cell("b_m", 224, 10.3, n=12, seed=6, jitter=0.2)])
    runs = load_runs([run])
    (text,) = verdict_statements(records_frame(runs), runs)
    assert "cannot be told apart at this noise" in text


def test_ranking_change_between_resolutions_is_named(tmp_path):
    records = [cell("conv_m", r, ms, seed=i) for i, (r, ms) in enumerate([(224, 10.0), (512, 40.0), (800, 100.0)])]
    records += [cell("attn_m", r, ms, seed=10 + i) for i, (r, ms) in enumerate([(224, 5.0), (512, 45.0), (800, 250.0)])]
    runs = load_runs([make_run(tmp_path / "r", records)])
    lines = verdict_statements(records_frame(runs), runs)
    change = [s for s in lines if "is faster than" in s]
    assert change and "attn_m is faster than conv_m at 224 but slower at 512" in change[0], lines


def test_verdict_comes_first_then_environment(tmp_path):
    records = [cell(m, r, ms * r / 224, seed=i) for i, (m, ms) in enumerate([("pvt_tiny", 10.0), ("vit_s", 12.0)])
               for r in (224, 512)]
    out = render_report([make_run(tmp_path / "r", records)], tmp_path / "report.html")
    html = out.read_text()
    page = Page(html)
    ids = [a["id"] for t, a in page.tags if t == "section" and "id" in a]
    assert ids[0] == "verdict" and ids.index("environment") == 1 + sum(1 for i in ids[1:] if i.startswith("matrix-"))
    assert html.index("<img") < html.index('id="matrix-')  # the headline figure above the matrices
    assert "v-slower" in html and "v-faster" in html


def test_runs_side_by_side_use_compare_runs(tmp_path):
    a = make_run(tmp_path / "a", [cell("pvt_tiny", 224, 10.0, seed=1, run_id="a")])
    b = make_run(tmp_path / "b", [cell("pvt_tiny", 224, 12.0, seed=2, run_id="b")])
    html = render_report([a, b], tmp_path / "report.html").read_text()
    (text,) = re.findall(r"0\.8\d\d× \[0\.8\d\d, 0\.8\d\d\], q [0-9.e-]+, slower", html)
    assert text


def test_bold_only_for_a_win_beyond_the_noise(tmp_path):
    """Two identical models: the larger throughput is not bold; 10% apart: the faster one is."""
    records = [cell("pvt_small", 224, 10.0, seed=3), cell("vit_s", 224, 10.0, seed=4),
               cell("pvt_small", 512, 10.0, seed=5), cell("vit_s", 512, 11.0, seed=6)]
    page = Page(render_report([make_run(tmp_path / "r", records)], tmp_path / "report.html").read_text())
    column = page.headers["results-infer"].index("throughput (img/s)")
    marked = {tuple(page.tables["results-infer"][row][:2]) for row, col in page.best["results-infer"] if col == column}
    assert marked == {("512", "pvt_small")}
    assert "run id" not in page.headers["results-infer"]  # one run: its id is in the header


def test_repeats_are_one_row_with_the_estimate_over_repeats(tmp_path):
    """Three visits per cell: one table row whose latency is the mean of the repeat medians, and
    the paragraph's intervals are the paired rounds', not within-run."""
    records = [cell(m, 224, ms * (1 + 0.01 * k), seed=10 * k + i, repeat=k, repeats=3)
               for k in range(3) for i, (m, ms) in enumerate([("pvt_tiny", 10.0), ("vit_s", 12.0)])]
    run = make_run(tmp_path / "r", records)
    runs = load_runs([run])
    df = records_frame(runs)
    assert len(df) == 2
    medians = [np.median(r["latency_samples_ms"]) for r in records if r["model"] == "pvt_tiny"]
    assert df.loc[df["model"] == "pvt_tiny", "latency_ms"].item() == pytest.approx(np.mean(medians))
    (text,) = verdict_statements(df, runs)
    assert "paired ratios over 3 rounds" in text and "within-run only" not in text
