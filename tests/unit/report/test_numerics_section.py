"""The report's Numerics section: speed against the fp32 eager cell beside the agreement, the
drifted cells said in words, the per-output table; nothing when no cell was checked."""
from __future__ import annotations

import numpy as np

from bench.measure.agreement import Agreement, OutputAgreement
from bench.report.load import load_runs
from bench.report.numerics import numerics_section
from bench.report.render import render_report
from tests.report_page import Page, make_run


def _record(dtype: str, step_ms: float, agreement: Agreement | None, seed: int) -> dict:
    samples = list(np.random.default_rng(seed).normal(step_ms, step_ms * 0.01, 40))
    rec = {"task": "cls", "model": "resnet18", "res": "64", "height": 64, "width": 64, "mode": "infer", "batch": 2,
           "global_batch": 2, "engine": "none", "world_size": 1, "device": "cpu", "device_name": "cpu", "dtype": dtype,
           "compile": False, "channels_last": False, "status": "ok", "latency_ms": float(np.median(samples)),
           "latency_samples_ms": samples, "throughput": 2000 / step_ms, "cell_key": "cls|resnet18|64|infer|2",
           "config_id": dtype, "flags": []}
    return rec | (agreement.to_record() if agreement else {"agreement": None})


def _agreement(cosine: float, rel_l2: float) -> Agreement:
    return Agreement("bf16", 2, "random", [OutputAgreement("logits", None, 0.99999, 0.004, 0.01),
                                          OutputAgreement("stage3", 16, cosine, rel_l2, 1.0)]).judge()


def test_speed_sits_beside_agreement_and_drift_is_said(tmp_path):
    fp32 = make_run(tmp_path / "fp32", [_record("fp32", 10.0, None, 1)])
    bf16 = make_run(tmp_path / "bf16", [_record("bf16", 5.0, _agreement(0.2, 0.9), 2)])
    statements, (main, detail) = numerics_section(load_runs([fp32, bf16]))
    (row,) = main.to_frame().to_dict("records")
    speed = row["speed vs fp32 eager (throughput ratio [95% CI])"]
    assert speed.startswith("×2.0") and speed.endswith("faster")  # 5 ms against 10 ms
    assert row["worst cosine"] == "0.200000" and row["answer"].startswith("DRIFTED: worst_cosine 0.2 < 0.99")
    assert any("bf16 changed the answer" in s for s in statements)
    assert [r[4].text for r in detail.rows] == ["logits", "stage3"] and detail.rows[1][5].text == "16"
    page = Page(render_report([fp32, bf16], tmp_path / "report.html").read_text())
    assert "numerics" in page.tables and page.column("numerics", "math") == ["bf16"]


def test_a_kept_answer_without_a_reference_cell_says_so(tmp_path):
    bf16 = make_run(tmp_path / "bf16", [_record("bf16", 5.0, _agreement(0.99999, 0.01), 2)])
    statements, (main, _) = numerics_section(load_runs([bf16]))
    row = main.to_frame().to_dict("records")[0]
    assert row["answer"] == "kept" and row["speed vs fp32 eager (throughput ratio [95% CI])"].startswith("no fp32")
    assert any("bf16 kept the answer" in s for s in statements)


def test_no_checked_cell_no_section(tmp_path):
    fp32 = make_run(tmp_path / "fp32", [_record("fp32", 10.0, None, 1)])
    assert numerics_section(load_runs([fp32])) == ([], [])
