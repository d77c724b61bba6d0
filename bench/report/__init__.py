"""Reports: one or more run directories -> a self-contained HTML page, or the same tables as CSV
or Markdown for papers and PRs.

Every view is built from the same ``Table`` objects, so the HTML, CSV and Markdown cannot
disagree. The page has no scripts and no external links: plots are PNG data URIs, the CSS is
inline, and every string from a user or a results file goes through jinja2's autoescape.

Modules, in the order the data flows:

- ``load``: run directories -> Run objects -> one DataFrame of records with labels and sort keys
- ``tables``: the Table/TableCell structure, cell formatting, best-value marks, performance tables
- ``scaling``: cost ∝ pixels^k fitted per model (``fit_power_law``), crossovers, attention's share
- ``references``: the PVT paper's and published figures (classification and dense prediction),
  and the tables that compare with them
- ``sra``: the spatial-reduction ablation (pvt_X against pvt_X_nosr), with generated statements
- ``plots``: the performance and scaling plots as PNG data URIs, and the figure helpers
- ``frontier``: the largest batch that fits per resolution (``--batch auto`` cells)
- ``finetune``: the fine-tune tables and plots
- ``sanitize``: untrusted text (names, errors, env values) made visible: control and bidi
  characters as escapes in every export, Markdown links and images escaped
- ``render``: the page's sections in order (a section with nothing to show is left out), rendered
  as HTML, CSV or Markdown to a file
- ``command``: the ``bench report`` command line; ``formats``: the formats it writes

The names below are imported on first use (PEP 562): ``bench --help`` and ``bench run`` reach
``bench.report.command`` and ``bench.report.sanitize`` at start-up, and must not pay for pandas,
matplotlib and scipy, which ``render`` imports, before a report is rendered.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"report_command": "bench.report.command", "PAPER_TABLE2": "bench.report.references",
         "render_report": "bench.report.render", "fmt_number": "bench.report.tables"}

__all__ = ["PAPER_TABLE2", "fmt_number", "render_report", "report_command"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
