"""Reports: one or more run directories -> a self-contained HTML page, or the same tables as CSV
or Markdown for papers and PRs.

Every view is built from the same ``Table`` objects, so the HTML, CSV and Markdown cannot
disagree. The page has no scripts and no external links: plots are PNG data URIs, the CSS is
inline, and every string from a user or a results file goes through jinja2's autoescape.

Modules, in the order the data flows:

- ``load``: run directories -> Run objects -> one DataFrame of records with labels and sort keys
- ``tables``: the Table/Cell structure, cell formatting, best-value marks, performance tables
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
- ``command``: the ``bench report`` command line
"""
from bench.report.command import report_command
from bench.report.references import PAPER_TABLE2
from bench.report.render import render_report
from bench.report.tables import fmt_number

__all__ = ["PAPER_TABLE2", "fmt_number", "render_report", "report_command"]
