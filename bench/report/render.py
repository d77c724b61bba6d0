"""Rendering: the report's tables in page order, as a self-contained HTML page (jinja2, with
the template in bench/templates), as CSV or as Markdown, written atomically to a file."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bench import __version__
from bench.errors import BadInput
from bench.outputs import check_output_file, write_atomically
from bench.report.deployed import DEPLOYED_INTRO, deployed_section
from bench.report.finetune import FINETUNE_PLOTS, finetune_tables
from bench.report.formats import FORMATS
from bench.report.frontier import FRONTIER_INTRO, FRONTIER_PLOTS, frontier_table
from bench.report.load import Run, load_runs, records_frame
from bench.report.numerics import NUMERICS_INTRO, numerics_section
from bench.report.plots import PERF_PLOTS, SCALING_PLOTS, Plot, PlotSpec, make_plots
from bench.report.references import (
    dense_reference_table,
    reference_table,
    throughput_reference_table,
    v100_reference_table,
)
from bench.report.scaling import SCALING_INTRO, attention_statements, scaling_tables
from bench.report.sra import SRA_INTRO, sra_section
from bench.report.study import STUDY_INTRO, study_section
from bench.report.tables import (
    Table,
    as_text,
    best_value_rule,
    comparison_table,
    flag_statements,
    perf_tables,
    provenance_table,
    status_text,
)
from bench.report.verdict import VERDICT_INTRO, headline_caption, headline_figure, matrix_tables, verdict_statements
from bench.sanitize import md_text, neutral, visible

TEMPLATE = "report.html.j2"  # in bench/templates, shipped as package data of `bench`
ENV_ORDER = ["run_id", "started_at", "command", "hostname", "platform", "python", "torch", "cuda",
             "device_name", "cpu", "threads", "nproc", "git_commit", "git_dirty"]
PER_CELL_TABLES = ("results-", "finetune")  # key prefixes of the tables with one row per cell


def render_report(run_dirs: list[Path], out: Path, fmt: str = "html",
                  load: Callable[[list[Path]], list[Run]] = load_runs) -> Path:
    """Render the report of ``run_dirs`` to ``out`` (written atomically) and return its path;
    ``load`` reads the runs (bench report --where: only the records a query selects)."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown report format '{visible(str(fmt))}'; choose from {', '.join(FORMATS)}")
    if not run_dirs:
        raise BadInput("no run directory given; pass one or more directories written by `bench run --out DIR`")
    check_output_file(out)  # before any work: a run's data, a device, FIFO, symlink or unwritable place is refused
    runs = neutral_runs(load(run_dirs))
    df = records_frame(runs)
    sections = report_sections(df, runs)
    tables = all_tables(df, sections)
    if fmt == "html":
        text = render_html(runs, df, sections, tables)
    elif fmt == "csv":
        text = render_csv(tables)
    else:
        text = render_md(runs, sections, tables)
    return write_atomically(Path(out), text)


def neutral_runs(runs: list[Run]) -> list[Run]:
    """The runs with every string of their records, env.json, run ids and timing keys made
    visible (bench.sanitize), so that every table, statement, plot label and export
    built from them shows a control or bidi character as its escape instead of obeying it."""
    return [replace(run, env=neutral(run.env), records=neutral(run.records), run_id=visible(run.run_id),
                    timings={neutral(k): t for k, t in run.timings.items()}) for run in runs]


def results_intro() -> list[str]:
    """How to read the results tables; the columns and their directions come from the schema."""
    return [
        "Best value per column, among the cells of the same resolution and batch that finished, in "
        f"bold: {best_value_rule()}. Throughput and latency are bold only where the best is faster than "
        "the runner-up beyond the noise (bench.stats verdict); cells without samples keep the plain rule. "
        "GMACs are multiply-adds (GFLOPs = 2 × GMACs).",
    ]


@dataclass
class Section:
    """One part of the page: what it says (``intro``: how to read it; ``statements``: findings
    generated from the numbers), its tables and its plots. A section with no statement, table or
    plot is left out of the page entirely: no heading over nothing."""

    key: str     # the HTML id
    title: str
    nav: str     # the link text in the page's navigation
    intro: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[PlotSpec] = field(default_factory=list)
    warn: bool = False  # the statements are warnings
    rendered_plots: list[Plot] = field(default_factory=list)

    @property
    def has_content(self) -> bool:
        return bool(self.statements or self.tables or self.rendered_plots)


def report_sections(df: pd.DataFrame, runs: list[Run] | None = None) -> list[Section]:
    """Every section of the report in page order (the verdict first, then the environment, which
    is not one of these, and the provenance last), with the tables each has; plots are rendered
    for HTML only. ``runs`` brings the samples of every repeat (without them: no intervals)."""
    runs = runs or []
    sra_statements, sra_tables = sra_section(df)
    study_statements, study_tables, study_plots = study_section(runs)  # issue 19 A
    numerics_statements, numerics_tables = numerics_section(runs)
    deployed_statements, deployed_tables, deployed_plots = deployed_section(runs)  # issue 30
    headline: PlotSpec = ("Throughput and peak memory against resolution", headline_caption,
                          lambda d: headline_figure(d, runs))
    return [
        Section("verdict", "Verdict", "verdict", VERDICT_INTRO, statements=verdict_statements(df, runs),
                tables=matrix_tables(df, runs), plots=[headline]),
        Section("flags", "Flagged cells", "flags", statements=flag_statements(df), warn=True),
        Section("results", "Results", "results", results_intro(),
                tables=_present(*perf_tables(df, runs), comparison_table(df, runs))),
        Section("numerics", "Numerics", "numerics", NUMERICS_INTRO, statements=numerics_statements,
                tables=numerics_tables),
        Section("deployed", "Deployed", "deployed", DEPLOYED_INTRO, statements=deployed_statements,
                tables=deployed_tables, plots=deployed_plots),
        Section("scaling", "Resolution scaling, fitted", "scaling", SCALING_INTRO,
                statements=attention_statements(df), tables=scaling_tables(df), plots=SCALING_PLOTS),
        Section("study", "Scaling study: throughput against ranks", "scaling study", STUDY_INTRO,
                statements=study_statements, tables=study_tables, plots=study_plots),
        Section("sra", "What spatial-reduction attention buys", "SRA", SRA_INTRO,
                statements=sra_statements, tables=sra_tables),
        Section("frontier", "Memory frontier", "batch frontier", FRONTIER_INTRO,
                tables=_present(frontier_table(df)), plots=FRONTIER_PLOTS),
        Section("reference", "Reference figures", "reference",
                tables=_present(reference_table(df), throughput_reference_table(df))),
        Section("dense", "Dense prediction against the paper", "dense",
                tables=_present(dense_reference_table(df), v100_reference_table(df))),
        Section("plots", "Plots", "plots", plots=PERF_PLOTS),
        Section("finetune", "Fine-tunes", "fine-tunes", tables=finetune_tables(df), plots=FINETUNE_PLOTS),
    ]


def _present(*tables: Table | None) -> list[Table]:
    return [t for t in tables if t is not None]


def with_content(sections: list[Section]) -> list[Section]:
    """The sections that have something to show."""
    return [s for s in sections if s.has_content]


def all_tables(df: pd.DataFrame, sections: list[Section] | None = None) -> list[Table]:
    """Every table of the report, in page order: the Markdown export is all of them, the CSV
    the per-cell ones (see render_csv)."""
    sections = report_sections(df) if sections is None else sections
    tables = [t for s in sections for t in s.tables]
    details = provenance_table(df)
    return tables + ([details] if details is not None else [])


def report_title(runs: list[Run]) -> str:
    return "bench report: " + ", ".join(r.run_id for r in runs)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def render_html(runs: list[Run], df: pd.DataFrame, sections: list[Section], tables: list[Table]) -> str:
    for section in sections:
        section.rendered_plots = make_plots(df, section.plots) if section.plots else []
    return _template_env().get_template(TEMPLATE).render(
        title=report_title(runs),
        version=__version__,
        runs=[environment(r, df) for r in runs],
        sections=with_content(sections),
        details=[t for t in tables if t.key == "provenance"],
    )


def _template_env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench", "templates"),  # bench/templates, beside this package
        autoescape=True,  # every record and env string is escaped; the template never uses |safe
        undefined=jinja2.StrictUndefined,
        finalize=_visible_output,  # every {{ }}: control and bidi characters as escapes, whatever their source
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _visible_output(value: Any) -> Any:
    """jinja2's finalize: a plain string is made visible before it is escaped; Markup (a macro's
    output, already made of finalized parts) is left as it is."""
    from markupsafe import Markup

    return visible(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def environment(run: Run, df: pd.DataFrame) -> dict[str, Any]:
    """What the page says about one run: its set-ups, counts by status, how busy the machine
    was while the cells ran (a shared machine slows every timing), and its env.json."""
    part = df[df["run_id"] == run.run_id]
    loads = pd.to_numeric(part["loadavg_1m"], errors="coerce").dropna()
    cores = run.env.get("nproc")
    items = [(k, as_text(run.env.get(k))) for k in ENV_ORDER if k in run.env]
    items += [(k, as_text(v)) for k, v in run.env.items() if k not in ENV_ORDER and k != "packages"]
    packages = run.env.get("packages") if isinstance(run.env.get("packages"), dict) else {}
    return {
        "run_id": run.run_id,
        "path": visible(str(run.path)),
        "setups": list(dict.fromkeys(part["setup"])),
        "counts": {status_text(s, None): int(n) for s, n in part["status"].value_counts(sort=False).items()},
        "fields": items,
        "packages": sorted((str(k), as_text(v)) for k, v in packages.items()),
        "has_env": bool(run.env),
        "load": f"{loads.min():.1f}–{loads.max():.1f}" if len(loads) else None,
        "cores": cores,
        "busy": bool(len(loads)) and isinstance(cores, (int, float)) and loads.max() > cores,
    }


# --------------------------------------------------------------------------------------------
# CSV and Markdown
# --------------------------------------------------------------------------------------------


def render_csv(tables: list[Table]) -> str:
    """The tables with one row per cell (infer, train, fine-tunes), stacked into one CSV whose
    first column names the table. The side-by-side and reference tables are views of the same
    rows (plus the paper's constants) with other columns; they are in the HTML and Markdown."""
    frames = [t.to_frame().assign(table=t.key)[["table", *t.columns]]
              for t in tables if t.key.startswith(PER_CELL_TABLES)]
    frame = pd.concat(frames, ignore_index=True).map(neutralise_csv_cell)
    frame.columns = [neutralise_csv_cell(c) for c in frame.columns]
    return frame.to_csv(index=False)


def neutralise_csv_cell(value: Any) -> Any:
    """Control and bidi characters as escapes (bench.sanitize), then OWASP's rule against
    formula injection: a text cell that begins with =, +, -, @ (or a tab or carriage return) and
    is not a number gets a leading '."""
    if isinstance(value, str):
        value = visible(value)
    if not isinstance(value, str) or not value or value[0] not in "=+-@\t\r":
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def _md_cell(text: str) -> str:
    """One Markdown table cell, list item or heading (bench.sanitize.md_text): control and
    bidi characters as escapes, HTML escaped (Markdown renderers pass raw HTML through), no line
    break and no bare "|" (either would end the cell), no link, image or autolink."""
    return md_text(text)


def render_md(runs: list[Run], sections: list[Section], tables: list[Table]) -> str:
    """Every section with its findings as a list and its tables; best cells in bold, the notes
    below each table. The plots are the HTML page's only."""
    parts = [f"# {_md_cell(report_title(runs))}", ""]
    for section in with_content(sections):
        parts += [f"## {_md_cell(section.title)}", ""]
        if section.statements:
            parts += [f"- {_md_cell(s)}" for s in section.statements] + [""]
        for t in section.tables:
            parts += _md_table(t)
    for t in tables:
        if t.key == "provenance":
            parts += _md_table(t)
    return "\n".join(parts)


def _md_table(t: Table) -> list[str]:
    # A "|" or a line break in a cell (a model name, an error message) would end the cell.
    frame = t.to_frame(mark_best="**").map(_md_cell)
    frame.columns = [_md_cell(c) for c in frame.columns]
    # disable_numparse: tabulate would otherwise re-format "13.20" as "13.2".
    parts = [f"### {_md_cell(t.title)}", "", frame.to_markdown(index=False, disable_numparse=True), ""]
    parts += [f"- {_md_cell(note)}" for note in t.notes]
    if t.notes:
        parts.append("")
    return parts
