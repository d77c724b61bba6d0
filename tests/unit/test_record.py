"""The record schema (bench/record/declared.py): field types read once from the annotations, the display
metadata that drives the report, the v1 shims in ``upgrade`` alone, and the proof that a field
declared once in ``Record`` reaches the HTML, CSV and Markdown report with no other change."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from report_page import Page, _markdown_tables

import bench.record as record
import bench.record.declared as declared
from bench.record import (
    FINETUNE,
    MEASURE,
    PERFORMANCE,
    Display,
    Record,
    RunDir,
    SchemaError,
    check_record,
    latest_by_cell,
    read_records_counted,
    schema,
    upgrade,
    well_formed,
)
from bench.report import render_report

TOY_LABEL = "toy score"
TOY_HEADER = "toy score (pts)"


@dataclass
class ToyRecord(Record):
    """``Record`` with one more measured field, as a contributor would add it: one line."""

    toy_score: float | None = record._f(MEASURE, "pts", "a toy metric", Display(TOY_LABEL, better="max"))
    toy_detail: int | None = record._f(MEASURE, "events", show=Display("toy events", main=False, fmt=".0f"))
    toy_list: list[int] | None = record._f(MEASURE)


def cells(**extra) -> list[dict]:
    """Two finished inference cells at one resolution (so the best value has a choice)."""
    out = []
    for i, model in enumerate(("resnet18", "pvt_tiny")):
        out.append(check_record({
            "kind": "run", "task": "cls", "model": model, "res": "64", "height": 64, "width": 64, "mode": "infer",
            "batch": 1, "cell_key": f"cls|{model}|64x64|infer|1", "config_id": "c", "device": "cpu",
            "device_name": "Test CPU", "dtype": "fp32", "precision": "fp32", "engine": "none", "world_size": 1,
            "status": "ok", "flags": [], "latency_ms": 10.0 + i, "throughput": 100.0 - i,
            "timestamp": f"2026-11-25T10:00:00.00000{i}+0000",
            **{k: (v[i] if isinstance(v, tuple) else v) for k, v in extra.items()}}))
    return out


def render_all(tmp_path: Path, records: list[dict]) -> tuple[Page, list[list[str]], str]:
    run = RunDir(tmp_path / "run").create()
    for rec in records:
        run.append(rec)
    page = Page(render_report([run.path], tmp_path / "r.html").read_text())
    rows = list(csv.reader(io.StringIO(render_report([run.path], tmp_path / "r.csv", "csv").read_text())))
    md = render_report([run.path], tmp_path / "r.md", "md").read_text()
    return page, rows, md


def csv_column(rows: list[list[str]], table: str, header: str) -> list[str]:
    i = rows[0].index(header)
    return [r[i] for r in rows[1:] if r[0] == table]


# --------------------------------------------------------------------------------------------
# A new metric: declared once, shown everywhere


def test_a_field_added_to_the_record_shows_in_html_csv_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(declared, "SCHEMA", record.Schema(ToyRecord))
    page, rows, md = render_all(tmp_path, cells(toy_score=(0.5, 0.75), toy_detail=(3, 4)))

    headers = page.headers["results-infer"]
    assert TOY_HEADER in headers
    shown = dict(zip(page.column("results-infer", "model"), page.column("results-infer", TOY_HEADER)))
    assert shown == {"resnet18": "0.5", "pvt_tiny": "0.75"}
    # better="max": the larger value is the marked one.
    column = headers.index(TOY_HEADER)
    (best_row,) = [row for row, col in page.best["results-infer"] if col == column]
    assert page.tables["results-infer"][best_row][headers.index("model")] == "pvt_tiny"
    # The reading guide above the tables names it among the "highest" columns.
    (guide,) = [t for t in page.text if "Best value per column" in t]
    assert f", {TOY_LABEL}; lowest " in " ".join(guide.split())

    # A details field goes to the details table, formatted as its Display says.
    assert page.column("results-infer-details", "toy events (events)") == ["3", "4"]
    assert TOY_HEADER not in page.headers["results-infer-details"]

    assert sorted(csv_column(rows, "results-infer", TOY_HEADER)) == ["0.5", "0.75"]
    assert sorted(csv_column(rows, "results-infer-details", "toy events (events)")) == ["3", "4"]
    # the first table with the column: the verdict's matrices now come before the results
    md_header, md_rows = next((h, r) for h, r in _markdown_tables(md) if TOY_HEADER in h)
    assert [row[md_header.index(TOY_HEADER)] for row in md_rows] == page.column("results-infer", TOY_HEADER)


def test_without_the_field_there_is_no_such_column(tmp_path):
    page, rows, md = render_all(tmp_path, cells())
    assert TOY_HEADER not in page.headers["results-infer"]
    assert TOY_HEADER not in rows[0] and TOY_LABEL not in md
    with pytest.raises(SchemaError, match="toy_score"):
        check_record({"model": "x", "toy_score": 1.0})


def test_a_declared_field_nobody_measured_shows_no_empty_column(tmp_path, monkeypatch):
    monkeypatch.setattr(declared, "SCHEMA", record.Schema(ToyRecord))
    page, rows, _ = render_all(tmp_path, cells())
    assert TOY_HEADER not in page.headers["results-infer"] and TOY_HEADER not in rows[0]
    assert "results-infer-details" not in page.tables  # nothing of the details was recorded


# --------------------------------------------------------------------------------------------
# What is measured today is shown


def test_compile_energy_reserved_memory_tflops_and_the_ci_are_shown(tmp_path):
    page, rows, md = render_all(tmp_path, cells(
        compile_s=(12.5, 30.25), energy_j_per_image=(0.8, 1.2), mem_reserved_mb=(512.0, 640.0),
        achieved_tflops=(1.5, 2.5), latency_ci95_ms=([9.5, 10.25], [10.5, 11.75]),
        iters=(20, 31), latency_cv=(0.01, 0.025)))
    col = {h: dict(zip(page.column("results-infer", "model"), page.column("results-infer", h)))
           for h in page.headers["results-infer"]}
    assert col["compile time (s)"] == {"resnet18": "12.50", "pvt_tiny": "30.25"}
    assert col["energy per image (J)"] == {"resnet18": "0.8", "pvt_tiny": "1.20"}
    assert col["reserved memory (MB)"] == {"resnet18": "512.0", "pvt_tiny": "640.0"}
    assert col["achieved TFLOP/s"] == {"resnet18": "1.50", "pvt_tiny": "2.50"}
    assert col["latency 95% CI (ms)"] == {"resnet18": "9.50–10.25", "pvt_tiny": "10.50–11.75"}
    details = dict(zip(page.column("results-infer-details", "model"), page.column("results-infer-details", "CV (%)")))
    assert details == {"resnet18": "1.00", "pvt_tiny": "2.50"}
    assert page.column("results-infer-details", "timed iters") == ["20", "31"]
    assert sorted(csv_column(rows, "results-infer", "latency 95% CI (ms)")) == ["10.50–11.75", "9.50–10.25"]
    md_header, md_rows = next((h, r) for h, r in _markdown_tables(md) if "latency 95% CI (ms)" in h)
    assert sorted(row[md_header.index("latency 95% CI (ms)")] for row in md_rows) == ["10.50–11.75", "9.50–10.25"]


def test_a_malformed_list_value_is_not_shown(tmp_path):
    """Issue 18 item 13: a record with a field of the wrong type is invalid as a whole (not shown)."""
    recs = cells(latency_ci95_ms=([9.5, 10.25], "abc"))
    page, _, _ = render_all(tmp_path, recs)
    assert sorted(page.column("results-infer", "latency 95% CI (ms)")) == ["9.50–10.25"]


# --------------------------------------------------------------------------------------------
# The schema itself


def test_field_types_are_python_types():
    fields = schema().fields
    assert (fields["batch"].type, fields["gmacs"].type, fields["model"].type) == (int, float, str)
    assert (fields["tf32"].type, fields["latency_ci95_ms"].type, fields["ds_config"].type) == (bool, list, dict)
    assert record.Schema(ToyRecord).fields["toy_list"].type is list  # list[int] | None


@pytest.mark.parametrize("rec, ok", [
    ({"batch": 4, "gmacs": 2}, True),           # an int is a float (JSON writes 2.0 as 2)
    ({"batch": None, "x_unknown": "y"}, True),  # null and undeclared fields are not judged
    ({"batch": True}, False),                   # a bool is not an int
    ({"tf32": 1}, False),                       # nor an int a bool
    ({"gmacs": "2.0"}, False),
    ({"latency_ci95_ms": {"low": 1}}, False),
    ({"ds_config": {"zero_optimization": {}}, "flags": ["time-cap"]}, True),
])
def test_well_formed_checks_the_declared_types(rec, ok):
    assert well_formed(rec) is ok


def test_every_shown_field_has_a_usable_display():
    for f in schema().fields.values():
        if f.display is None:
            continue
        d = f.display
        assert f.kind == MEASURE, f.name
        assert d.better in ("min", "max", ""), f.name
        assert d.sections and set(d.sections) <= {PERFORMANCE, FINETUNE}, f.name
        # Shown as a number, or through its own formatter (a list such as the CI).
        assert f.numeric or d.text is not None, f.name
        assert f.header.startswith(d.label)


# --------------------------------------------------------------------------------------------
# Older records: the shims live in upgrade alone


def test_v1_records_get_a_configuration_from_upgrade_and_stay_apart_by_engine(tmp_path):
    v1 = {"model": "pvt_small", "res": "224", "mode": "train", "batch": 4, "cell_key": "pvt_small|224|train|4",
          "dtype": "fp32", "world_size": 2}
    lines = [{**v1, "engine": "ddp", "timestamp": "1", "throughput": 1.0},
             {**v1, "engine": "deepspeed", "zero": 2, "timestamp": "2", "throughput": 2.0},
             {**v1, "engine": "ddp", "timestamp": "3", "throughput": 3.0}]  # a retry of the first
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    records, bad = read_records_counted(path)
    assert bad == 0 and all(r["config_id"].startswith("v1:") for r in records)
    assert records[0]["config_id"] != records[1]["config_id"]
    kept = latest_by_cell(records)
    assert sorted(r["throughput"] for r in kept) == [2.0, 3.0]
    # A current record keeps what it has.
    assert upgrade({"schema_version": 2, "config_id": None})["config_id"] is None
