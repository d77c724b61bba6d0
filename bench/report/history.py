"""The plot of ``bench history``: one cell's figure with its 95% CI bars against time, commit or
torch version, each point coloured by the verdict of the step into it (red: slower), as asv marks
its regressions. PNG or SVG, or an HTML page with the figure and the table inline. It takes plain
data (``HistoryPlot``): the command above builds it, and nothing here imports the command."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from bench.report.plots import figure
from bench.sanitize import visible

VERDICT_COLOURS = {"slower": "tab:red", "faster": "tab:green", "same": "tab:gray", "inconclusive": "tab:orange",
                   "no samples": "black", None: "tab:blue"}


@dataclass(frozen=True)
class HistoryPlot:
    title: str
    ylabel: str
    xlabel: str
    labels: list[str]                       # one per point, in order
    estimates: list[float | None]
    cis: list[tuple[float, float]]
    verdicts: list[str | None]              # the step into each point (None: the first)
    table_head: list[str]
    table_rows: list[list[str]]


def draw(p: HistoryPlot):
    """The figure (pyplot-free, as the report's)."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        fig, (ax,) = figure(max(6.0, 0.7 * len(p.labels) + 3), 4.2)
        xs = list(range(len(p.labels)))
        known = [(x, y, ci) for x, y, ci in zip(xs, p.estimates, p.cis) if y is not None]
        if known:
            ax.plot([k[0] for k in known], [k[1] for k in known], color="tab:blue", lw=1, zorder=1)
        for x, y, ci, v in zip(xs, p.estimates, p.cis, p.verdicts):
            if y is None:
                continue
            finite = all(math.isfinite(c) for c in ci)
            err = [[max(0.0, y - ci[0])], [max(0.0, ci[1] - y)]] if finite else None
            ax.errorbar([x], [y], yerr=err, fmt="o", capsize=4, color=VERDICT_COLOURS.get(v, "black"),
                        ms=8 if v in ("slower", "faster") else 6, zorder=2)
        for v in dict.fromkeys(p.verdicts):
            ax.plot([], [], "o", color=VERDICT_COLOURS.get(v, "black"), label=v or "first point")
        ax.legend(fontsize="small", title="step from the previous point", title_fontsize="small")
        ax.set_xticks(xs, [visible(s) for s in p.labels])
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
        ax.set_xlabel(p.xlabel)
        ax.set_ylabel(p.ylabel)
        ax.set_title(visible(p.title), fontsize="medium")
    return fig


def write_plot(p: HistoryPlot, path: Path) -> None:
    """PNG or SVG by the suffix; .html: a self-contained page with the PNG inline and the table.
    Drawn in memory, then written atomically by bench's one output rule (bench.outputs)."""
    import base64
    import io

    from bench.outputs import write_atomically

    fig = draw(p)
    suffix = path.suffix.lower()
    if suffix in (".png", ".svg"):
        image = io.BytesIO()
        fig.savefig(image, format=suffix[1:], dpi=96)
        write_atomically(path, image.getvalue())
        return
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    def esc(s: str) -> str:
        return html.escape(visible(s))

    head = "".join(f"<th>{esc(c)}</th>" for c in p.table_head)
    body = "".join("<tr>" + "".join(f'<td class="v-{esc(c)}">{esc(c)}</td>' for c in row) + "</tr>"
                   for row in p.table_rows)
    write_atomically(path,
        "<!doctype html><html><head><meta charset='utf-8'><title>bench history</title><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".v-slower{color:#c00;font-weight:bold}.v-faster{color:#080}</style></head><body>"
        f"<h1>{esc(p.title)}</h1><img alt='history' src='{uri}'><table><tr>{head}</tr>{body}</table>"
        "</body></html>\n")
