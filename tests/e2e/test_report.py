"""Reports from real runs: a tiny ``bench run`` writes the records, the report renders them, and
headless Chromium shows what a reader would see.

Two real runs, once per module: the main one (two models × two resolutions × infer and train) and
a second one that shares a cell with it and adds 224, so the side-by-side and paper-reference
tables have real data too. Failed cells and hostile names are made by editing copies of these
real records.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser import dump_dom, screenshot, scroll_widths
from click.testing import CliRunner
from conftest import NO_MFU
from PIL import Image
from report_page import Page, _markdown_tables

from bench.record import read_records_counted
from bench.report import PAPER_TABLE2, fmt_number, render_report, report_command
from bench.stats import Timings, compare_models, default_threshold

pytestmark = pytest.mark.browser  # headless Chromium reads the pages

REPO = Path(__file__).resolve().parents[2]
MODELS = ["resnet18", "pvt_tiny"]
RESOLUTIONS = ["64", "96"]
HOSTILE_MODEL = "<script>alert(1)</script>"


def bench_runs(*runs: tuple[Path, list[str]]) -> None:
    """Real ``bench run``s, side by side: one thread each, so the two cores overlap their
    start-up and FLOP counting instead of taking turns (the records are real either way).
    Output goes to a log beside each run directory (a full pipe would stall a run)."""
    procs = []
    for out, args in runs:
        log = out.with_suffix(".log").open("w")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "run", *args, *NO_MFU, "--batch", "1", "--budget", "0.2",
             "--threads", "1", "--out", str(out)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO), log))
    for proc, log in procs:
        proc.wait(timeout=600)
        log.close()
        assert proc.returncode == 0, Path(log.name).read_text()[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The main run: two models × two resolutions × infer and train, rendering its own report.
    The second: inference at 64 (resnet18@64 is in both) and 224, where the paper's Table 2 and
    the published throughputs (resnet50) have figures to compare with; profiled, so the page
    has an op-category breakdown."""
    base = tmp_path_factory.mktemp("runs")
    main, at224 = base / "tiny", base / "at224"
    bench_runs((main, ["--models", ",".join(MODELS), "--res", ",".join(RESOLUTIONS), "--modes", "infer,train"]),
               (at224, ["--models", "resnet18,resnet50", "--res", "64,224", "--modes", "infer", "--profile",
                        "--no-report"]))
    return main, at224


@pytest.fixture(scope="module")
def run_dir(runs) -> Path:
    return runs[0]


@pytest.fixture(scope="module")
def run_at_224(runs) -> Path:
    return runs[1]


def copy_run(src: Path, dst: Path, edit=None) -> Path:
    """A copy of a real run directory, with ``edit(records)`` applied to its records."""
    shutil.copytree(src, dst)
    records = read_records_counted(dst / "records.jsonl")[0]
    if edit:
        edit(records)
    (dst / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return dst


def records_of(run: Path) -> list[dict]:
    return read_records_counted(run / "records.jsonl")[0]


def test_bench_run_renders_its_own_report(run_dir):
    page = Page((run_dir / "report.html").read_text())
    assert {row[1] for row in page.tables["results-infer"]} == set(MODELS)


def test_report_in_a_browser_shows_every_model_and_resolution(run_dir, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(report_command, [str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)

    png = screenshot(out, tmp_path / "page.png")
    gray = Image.open(png).convert("L")
    low, high = gray.getextrema()
    inked = sum(n for level, n in enumerate(gray.histogram()) if level < 200) / (gray.width * gray.height)
    assert low < high and inked > 0.01, f"blank screenshot: extrema {low}-{high}, {inked:.2%} inked"

    page = Page(dump_dom(out))
    cells = {(r["model"], r["res"], r["mode"]) for r in records_of(run_dir)}
    assert {(m, r) for m, r, _ in cells} == {(m, r) for m in MODELS for r in RESOLUTIONS}
    shown = {(row[1], row[0], mode) for mode in ("infer", "train") for row in page.tables[f"results-{mode}"]}
    assert shown == cells
    # Nothing external: every image is embedded, and there is no script or stylesheet link.
    assert all(attrs["src"].startswith("data:image/png;base64,") for tag, attrs in page.tags if tag == "img")
    plots = [a.get("alt") for t, a in page.tags if t == "img"]
    wanted = {"Throughput vs resolution", "GMACs vs resolution", "Peak memory vs resolution", "GMACs per stage"}
    assert wanted <= set(plots)
    assert not [t for t, a in page.tags if t == "script" or (t == "link" and a.get("rel") == "stylesheet")]


def test_report_opens_with_the_verdict_and_fits_1400_px(run_dir, tmp_path):
    """In Chromium: the first section is the verdict, the environment follows it, and at a 1400-px
    window neither the page nor any table scrolls sideways."""
    out = render_report([run_dir], tmp_path / "report.html")
    page = Page(dump_dom(out))
    ids = [a["id"] for t, a in page.tags if t == "section" and "id" in a and not a["id"].startswith("matrix-")]
    assert ids[:2] == ["verdict", "environment"]
    document, widest_table = scroll_widths(out, 1400)
    assert document <= 1400 and widest_table <= 1400, (document, widest_table)


def test_strings_from_records_and_env_are_shown_as_text(run_dir, tmp_path):
    hostile_error = '<img src=x onerror="document.body.innerHTML=\'gone\'">'

    def edit(records):
        records[0]["model"] = HOSTILE_MODEL
        records[1].update(status="error", error=hostile_error, latency_ms=None, throughput=None)

    run = copy_run(run_dir, tmp_path / "hostile", edit)
    env = json.loads((run / "env.json").read_text())
    (run / "env.json").write_text(json.dumps({**env, "command": "bench run --models '<b>bold</b>'"}))
    out = render_report([run], tmp_path / "report.html")

    source = out.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in source
    assert "<script" not in source and "<img src=x" not in source and "<b>bold" not in source

    page = Page(dump_dom(out))
    text = "".join(page.text)
    assert HOSTILE_MODEL in text and hostile_error in text and "<b>bold</b>" in text
    assert not [t for t, a in page.tags if t in ("script", "b") or "onerror" in a]
    assert page.tables["results-infer"] and "Environment" in text  # the body was not replaced
    assert HOSTILE_MODEL in page.column("results-infer", "model")


def test_oom_and_error_cells_are_rows_that_say_so(run_dir, tmp_path):
    def edit(records):
        failures = ((records[0], "oom", "CUDA out of memory"), (records[1], "error", "RuntimeError: <boom>"))
        for r, status, error in failures:
            r.update(status=status, error=error, latency_ms=None, latency_p90_ms=None, throughput=None,
                     peak_mem_mb=None, mfu=None, per_rank_step_ms=None)

    run = copy_run(run_dir, tmp_path / "failed", edit)
    records = records_of(run)
    page = Page(render_report([run], tmp_path / "report.html").read_text())
    rows = {mode: page.tables[f"results-{mode}"] for mode in ("infer", "train")}
    assert sum(len(r) for r in rows.values()) == len(records)
    for record, shown in ((records[0], "OOM"), (records[1], "error: RuntimeError: <boom>")):
        table = f"results-{record['mode']}"
        row = next(r for r in page.tables[table] if (r[0], r[1]) == (record["res"], record["model"]))
        headers = page.headers[table]
        assert row[headers.index("status")] == shown
        assert row[headers.index("throughput (img/s)")] == shown.split(":")[0]
        assert row[headers.index("params (M)")] == f"{record['params'] / 1e6:.2f}"


def test_best_value_per_column_is_marked(run_dir):
    """The throughput cell marked best at each resolution is the fastest model's, and only where
    bench.stats finds it faster than the runner-up beyond the noise."""
    page = Page((run_dir / "report.html").read_text())
    column = page.headers["results-infer"].index("throughput (img/s)")
    marked = {tuple(page.tables["results-infer"][row][:2]) for row, col in page.best["results-infer"] if col == column}
    records = [r for r in records_of(run_dir) if r["mode"] == "infer"]
    fastest = set()
    for res in RESOLUTIONS:
        ranked = sorted((r for r in records if r["res"] == res), key=lambda r: -r["throughput"])
        first, second = (Timings.from_records([r]) for r in ranked[:2])
        if compare_models(second, first, "throughput", default_threshold("cpu")).verdict == "faster":
            fastest.add((res, ranked[0]["model"]))
    assert marked == fastest


def test_csv_and_markdown_hold_the_same_rows_as_the_page(run_dir, run_at_224, tmp_path):
    runs = [run_dir, run_at_224]
    page = Page(render_report(runs, tmp_path / "r.html").read_text())
    csv_rows = list(csv.reader(io.StringIO(render_report(runs, tmp_path / "r.csv", "csv").read_text())))
    md = render_report(runs, tmp_path / "r.md", "md").read_text()

    header = csv_rows[0]
    for key in ("results-infer", "results-train"):
        wanted = page.headers[key]
        from_csv = [[row[header.index(h)] for h in wanted] for row in csv_rows[1:] if row[0] == key]
        assert from_csv == page.tables[key]

    md_tables = _markdown_tables(md)
    assert [t[0] for t in md_tables] == [page.headers[k] for k in page.tables]
    assert [t[1] for t in md_tables] == list(page.tables.values())


def test_two_runs_side_by_side_and_against_the_paper(run_dir, run_at_224, tmp_path):
    out = render_report([run_dir, run_at_224], tmp_path / "both.html")
    page = Page(out.read_text())
    runs = {p.name: records_of(p)[0] for p in (run_dir, run_at_224)}
    labels = [f"{r['device_name']} · {r['engine']} ×{r['world_size']} · {name}" for name, r in runs.items()]
    assert page.headers["comparison"][5:7] == [f"throughput (img/s): {label}" for label in labels]
    shared = next(r for r in page.tables["comparison"] if r[:3] == ["infer", "64", "resnet18"])
    assert all(cell not in ("not run", "—") for cell in shared[5:])

    record = next(r for r in records_of(run_at_224) if (r["model"], r["res"]) == ("resnet18", "224"))
    row = next(r for r in page.tables["reference"] if r[0] == "resnet18")
    _, paper_params, paper_gmacs = PAPER_TABLE2["resnet18"]
    headers = page.headers["reference"]
    assert row[headers.index("params (M), paper")] == f"{paper_params:.2f}"
    assert row[headers.index("GFLOPs = GMACs, paper")] == f"{paper_gmacs:.2f}"
    assert row[headers.index("GMACs, ours")] == f"{record['gmacs']:.2f}"
    assert row[headers.index("Δ GMACs")] == f"{(record['gmacs'] - paper_gmacs) / paper_gmacs * 100:+.1f}%"
    assert any("multiply-add" in t for t in page.text)
    assert "Time by operation category" in [a.get("alt") for t, a in page.tags if t == "img"]  # --profile

    record = next(r for r in records_of(run_at_224) if (r["model"], r["res"]) == ("resnet50", "224"))
    row = next(r for r in page.tables["reference-throughput"] if r[0] == "resnet50")
    headers = page.headers["reference-throughput"]
    assert row[headers.index("throughput (img/s), ours")] == fmt_number(record["throughput"])
    if record["device"] == "cpu":
        assert row[headers.index("comparable?")].startswith("not comparable")


def test_default_output_and_format_from_suffix(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(report_command, [str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(Path("reports") / f"{run_dir.name}.html")
    assert Path(result.output.strip()).is_file()
    result = runner.invoke(report_command, [str(run_dir), "--out", "tables.md"])
    assert result.exit_code == 0 and Path("tables.md").read_text().startswith("# bench report")
