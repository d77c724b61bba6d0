"""The report's dense-prediction sections, from synthetic records written through the schema:
resolution scaling (fitted), the SRA ablation, the memory frontier, the dense reference, the
flagged-cells summary and the fine-tune fixes. Each section appears when its data is present and
is absent otherwise; the statements are checked against numbers computed here."""
from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from report_page import Page, make_run

from bench.record import check_record
from bench.report import render_report
from bench.report.finetune import EMA_SMOOTHING, ema, plot_finetune_metrics
from bench.report.load import load_runs, records_frame
from bench.report.references import PAPER_DENSE_COST, PAPER_RETINANET_V100
from bench.report.scaling import fit_power_law
from bench.report.tables import fmt_number

REPO = Path(__file__).resolve().parents[3]
RESOLUTIONS = (224, 512, 800)
COMMITTED = REPO / "results"


# --------------------------------------------------------------------------------------------
# Synthetic runs
# --------------------------------------------------------------------------------------------

_clock = iter(range(10**6))


def cell(model: str, res: int | tuple[int, int], mode: str = "infer", **fields) -> dict:
    """One finished cell as a writer would append it (checked against bench.record.Record)."""
    h, w = (res, res) if isinstance(res, int) else res
    batch = fields.pop("batch", 1)
    task = fields.pop("task", "cls")
    rec = {
        "kind": "run", "task": task, "model": model, "family": model.split("_")[0],
        "res": str(h) if h == w else f"{h}x{w}",
        "height": h, "width": w, "mode": mode, "batch": batch, "cell_key": f"{task}|{model}|{h}x{w}|{mode}|{batch}",
        "config_id": "cfg", "device": "cpu", "device_name": "Test CPU", "dtype": "fp32", "precision": "fp32",
        "engine": "none", "world_size": 1, "status": "ok", "error": None, "flags": [],
        "timestamp": f"2026-11-25T10:00:00.{next(_clock):06d}+0000",
    }
    rec.update(fields)
    return check_record(rec)


def page_of(tmp_path: Path, *runs: Path) -> tuple[Page, str]:
    out = render_report(list(runs), tmp_path / "report.html")
    html = out.read_text()
    return Page(html), html


def section_ids(page: Page) -> list[str]:
    return [a["id"] for t, a in page.tags if t == "section" and "id" in a]


def h2s(html: str) -> list[str]:
    return re.findall(r"<h2>([^<]*)</h2>", html)


def statements(html: str, key: str) -> list[str]:
    """The items of a section's list of statements (findings or warnings)."""
    parser = _Statements(key)
    parser.feed(html)
    return parser.items


class _Statements(HTMLParser):
    def __init__(self, key: str):
        super().__init__(convert_charrefs=True)
        self.key, self.items, self._inside, self._item = key, [], False, None

    def handle_starttag(self, tag, attrs):
        if tag == "ul" and dict(attrs).get("data-statements") == self.key:
            self._inside = True
        elif tag == "li" and self._inside:
            self._item = []

    def handle_endtag(self, tag):
        if tag == "li" and self._item is not None:
            self.items.append(" ".join("".join(self._item).split()))
            self._item = None
        elif tag == "ul":
            self._inside = False

    def handle_data(self, data):
        if self._item is not None:
            self._item.append(data)


# Power laws the synthetic models follow: cost = c * pixels^k.
LAWS = {
    "pvt_small": {"gmacs": (1.2e-4, 1.10), "latency_ms": (3e-3, 1.05), "peak_mem_mb": (2.0, 0.45)},
    "vit_s": {"gmacs": (1.0e-6, 1.50), "latency_ms": (1e-4, 1.30), "peak_mem_mb": (4.0, 0.30)},
}


def law(model: str, metric: str, pixels: float) -> float:
    c, k = LAWS[model][metric]
    return c * pixels ** k


def scaling_records(resolutions=RESOLUTIONS, **extra) -> list[dict]:
    out = []
    for model in LAWS:
        for res in resolutions:
            p = float(res * res)
            out.append(cell(model, res, "infer", gmacs=law(model, "gmacs", p), latency_ms=law(model, "latency_ms", p),
                            peak_mem_mb=law(model, "peak_mem_mb", p), params=22_000_000, throughput=1.0, **extra))
    return out


# --------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------


def test_fit_power_law_recovers_a_known_exponent():
    rng = np.random.default_rng(0)
    pixels = np.array([224, 320, 448, 512, 640, 800, 1024], dtype=float) ** 2
    values = 3 * pixels ** 1.25 * (1 + rng.normal(0, 0.01, pixels.size))
    k, coefficient, r2 = fit_power_law(pixels, values)
    assert k == pytest.approx(1.25, abs=0.01)
    assert coefficient == pytest.approx(3, rel=0.1)
    assert r2 > 0.99


def test_fit_follows_the_data_not_a_constant():
    pixels = [224.0 ** 2, 512.0 ** 2, 800.0 ** 2]
    slopes = {k: fit_power_law(pixels, [2 * p ** k for p in pixels])[0] for k in (0.5, 1.0, 2.0)}
    assert slopes == {k: pytest.approx(k, abs=1e-9) for k in (0.5, 1.0, 2.0)}
    k, c, r2 = fit_power_law(pixels, [7.0, 7.0, 7.0])
    assert (k, c, r2) == (pytest.approx(0.0, abs=1e-12), pytest.approx(7.0), 1.0)
    # Scatter with no trend: the fit says so with a low R².
    assert fit_power_law([1.0, 2.0, 3.0, 4.0], [1.0, 9.0, 1.0, 9.0])[2] < 0.5


@pytest.mark.parametrize("pixels, values", [([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), ([1.0, 2.0], [1.0, 0.0]),
                                            ([1.0, 2.0], [1.0])])
def test_fit_refuses_what_it_cannot_fit(pixels, values):
    with pytest.raises(ValueError):
        fit_power_law(pixels, values)


# --------------------------------------------------------------------------------------------
# Resolution scaling
# --------------------------------------------------------------------------------------------


def test_scaling_section_shows_the_fitted_exponents_and_crossovers(tmp_path):
    page, html = page_of(tmp_path, make_run(tmp_path / "run", scaling_records()))
    assert "scaling" in section_ids(page)
    fits = page.tables["scaling-fits"]
    headers = page.headers["scaling-fits"]
    for model, metrics in LAWS.items():
        for metric, name in (("gmacs", "GMACs"), ("latency_ms", "latency (ms)"), ("peak_mem_mb", "peak memory (MB)")):
            row = next(r for r in fits if r[headers.index("cost")] == name and r[headers.index("model")] == model)
            assert row[headers.index("k (cost ∝ pixels^k)")] == f"{metrics[metric][1]:.3f}"
            assert row[headers.index("R²")] == "1.0000"
    # GMACs of pvt_small and vit_s: c1 p^k1 = c2 p^k2 at p = (c1/c2)^(1/(k2-k1)), within 224-800.
    (c1, k1), (c2, k2) = LAWS["pvt_small"]["gmacs"], LAWS["vit_s"]["gmacs"]
    crossing = (c1 / c2) ** (1 / (k2 - k1))
    assert 224 ** 2 < crossing < 800 ** 2
    crossover = next(r for r in page.tables["scaling-crossovers"] if r[0] == "GMACs")
    assert crossover[3].startswith(f"≈ {math.sqrt(crossing):.0f}² px")
    assert crossover[4].startswith("within the measured 224–800")
    assert crossover[5].startswith("vit_s")  # the steeper line costs more above the crossing
    # The exact statement about spatial-reduction attention, and no hedge.
    text = " ".join(" ".join(page.text).split())
    assert "N²/R_i²" in text and "still grows with the square of the token count" in text
    assert "close to linear" not in html
    assert "Cost vs resolution, fitted" in [a.get("alt") for t, a in page.tags if t == "img"]


def test_crossovers_far_outside_the_measured_range_are_left_out(tmp_path):
    records = scaling_records()
    for r in records:  # vit_s 1000× cheaper: its steeper line crosses pvt_small's far above 800
        if r["model"] == "vit_s":
            r["gmacs"] /= 1000
    page, _ = page_of(tmp_path, make_run(tmp_path / "run", records))
    assert not [r for r in page.tables.get("scaling-crossovers", []) if r[0] == "GMACs"]


def test_scaling_section_needs_three_resolutions(tmp_path):
    page, html = page_of(tmp_path, make_run(tmp_path / "run", scaling_records(resolutions=(224, 512))))
    assert "scaling" not in section_ids(page)
    assert "scaling-fits" not in page.tables
    assert "Resolution scaling" not in html


def test_attention_share_per_resolution(tmp_path):
    records = []
    for res in RESOLUTIONS:
        n = (res // 4) ** 2  # stage-1 tokens
        attention = {"stage1": 2 * n * (n // 64) * 64 / 1e9, "stage2": 0.1, "stage3": 0.1, "stage4": 0.05}
        records.append(cell("pvt_small", res, gmacs=law("pvt_small", "gmacs", res * res), latency_ms=10.0 * res,
                            peak_mem_mb=100.0, attention_gmacs_per_stage=attention))
    page, html = page_of(tmp_path, make_run(tmp_path / "run", records))
    row = page.tables["scaling-attention"][0]
    shares = [sum(r["attention_gmacs_per_stage"].values()) / r["gmacs"] * 100 for r in records]
    assert [c.split("%")[0] for c in row[1:]] == [f"{s:.1f}" for s in shares]
    (line,) = statements(html, "scaling")
    assert line == (f"pvt_small: the attention products are {shares[0]:.1f}% of the GMACs at 224 and "
                    f"{shares[-1]:.1f}% at 800.")


# --------------------------------------------------------------------------------------------
# The SRA ablation
# --------------------------------------------------------------------------------------------


def sra_records(with_nosr: bool = True) -> list[dict]:
    out = []
    for res in RESOLUTIONS:
        tokens = [(res // s) ** 2 for s in (4, 8, 16, 32)]
        dims = (64, 128, 320, 512)
        reduced = {f"stage{i + 1}": 2 * n * (n // r ** 2) * d / 1e9
                   for i, (n, d, r) in enumerate(zip(tokens, dims, (8, 4, 2, 1)))}
        full = {f"stage{i + 1}": 2 * n * n * d / 1e9 for i, (n, d) in enumerate(zip(tokens, dims))}
        base_gmacs = 3.8 * (res / 224) ** 2
        models = [("pvt_small", reduced), ("pvt_small_nosr", full)][: 2 if with_nosr else 1]
        for model, attention in models:
            gmacs = base_gmacs + sum(attention.values()) - sum(reduced.values())
            for mode, per_gmac in (("infer", 20.0), ("train", 60.0)):
                out.append(cell(model, res, mode, gmacs=gmacs, attention_gmacs_per_stage=attention,
                                latency_ms=per_gmac * gmacs, peak_mem_mb=100 + 2 * sum(attention.values()),
                                params=24_500_000))
    return out


def test_sra_section_states_what_spatial_reduction_buys(tmp_path):
    records = sra_records()
    page, html = page_of(tmp_path, make_run(tmp_path / "run", records))
    assert "sra" in section_ids(page)

    def get(model, res, mode="infer"):
        return next(r for r in records if (r["model"], r["height"], r["mode"]) == (model, res, mode))

    lines = statements(html, "sra")
    assert len(lines) == len(RESOLUTIONS)
    for res, line in zip(RESOLUTIONS, lines):
        sra, nosr = get("pvt_small", res), get("pvt_small_nosr", res)
        a, b = sra["attention_gmacs_per_stage"]["stage1"], nosr["attention_gmacs_per_stage"]["stage1"]
        assert b / a == pytest.approx(64)
        assert line.startswith(f"At {res}, SRA cuts pvt_small's stage-1 attention from {fmt_number(b)} to "
                               f"{fmt_number(a)} GMACs (64.0×; R₁² = 64), total GMACs from "
                               f"{fmt_number(nosr['gmacs'])} to {fmt_number(sra['gmacs'])}")
        ratio = nosr["latency_ms"] / sra["latency_ms"]
        shown = f"{ratio:.1f}×" if ratio >= 10 else f"{ratio:.2f}×"
        assert (f"infer latency by {shown} ({fmt_number(nosr['latency_ms'])} → "
                f"{fmt_number(sra['latency_ms'])} ms)") in line
        assert "train latency by" in line and "infer peak memory by" in line
    # The per-stage table: the measured ratio beside R_i².
    headers = page.headers["sra-attention"]
    at512 = [r for r in page.tables["sra-attention"] if r[headers.index("res")] == "512"]
    assert [r[headers.index("stage")] for r in at512] == ["stage1", "stage2", "stage3", "stage4"]
    assert [r[headers.index("expected R_i²")] for r in at512] == ["64", "16", "4", "1"]
    assert at512[0][headers.index("ratio")] == "64.0×"
    assert at512[3][headers.index("ratio")] == "1.00×"
    assert len(page.tables["sra-cost"]) == len(RESOLUTIONS) * 2


def test_sra_section_needs_both_models(tmp_path):
    page, html = page_of(tmp_path, make_run(tmp_path / "run", sra_records(with_nosr=False)))
    assert "sra" not in section_ids(page)
    assert not {"sra-attention", "sra-cost"} & set(page.tables)
    assert "spatial-reduction attention buys" not in html


def test_sra_statement_says_when_the_ablation_ran_out_of_memory(tmp_path):
    records = sra_records()
    for r in records:
        if (r["model"], r["height"], r["mode"]) == ("pvt_small_nosr", 800, "train"):
            r.update(status="oom", error="CUDA out of memory", latency_ms=None, peak_mem_mb=None)
    page, html = page_of(tmp_path, make_run(tmp_path / "run", records))
    line = next(s for s in statements(html, "sra") if s.startswith("At 800"))
    assert line.endswith("pvt_small_nosr ran out of memory in train.")
    assert "train latency" not in line


# --------------------------------------------------------------------------------------------
# The memory frontier
# --------------------------------------------------------------------------------------------


def test_memory_frontier_from_batch_searches(tmp_path):
    largest = {224: 48, 512: 9, 800: 3}
    records = []
    for res, big in largest.items():
        tried = [{"batch": b, "fits": b <= big} for b in (1, 2, 4, 8, 16, 32, 64) if b <= big * 2]
        tried += [{"batch": big, "fits": True}, {"batch": big + 1, "fits": False}]
        for engine, zero in (("ddp", None), ("deepspeed", 2)):
            records.append(cell("pvt_small", res, "train", batch=big, batch_search=tried, engine=engine, zero=zero,
                                world_size=2, latency_ms=100.0, peak_mem_mb=1000.0, config_id=f"{engine}{zero}"))
    # A search that never failed stopped at its cap: a lower bound.
    never_failed = [{"batch": b, "fits": True} for b in (1, 2, 4, 8, 16, 32, 64)]
    records.append(cell("resnet50", 224, "train", batch=64, batch_search=never_failed, engine="ddp", world_size=2,
                        latency_ms=100.0, peak_mem_mb=900.0))
    page, _ = page_of(tmp_path, make_run(tmp_path / "run", records))
    assert "frontier" in section_ids(page)
    headers = page.headers["frontier"]
    rows = page.tables["frontier"]
    shown = {(r[headers.index("model")], r[headers.index("engine")], r[headers.index("res")]):
             r[headers.index("largest batch that fits")] for r in rows}
    for res, big in largest.items():
        assert shown[("pvt_small", "ddp", str(res))] == str(big)
        assert shown[("pvt_small", "deepspeed ZeRO-2", str(res))] == str(big)
    assert shown[("resnet50", "ddp", "224")] == "≥ 64"
    assert "Largest batch vs resolution" in [a.get("alt") for t, a in page.tags if t == "img"]


def test_no_frontier_without_batch_search(tmp_path):
    page, html = page_of(tmp_path, make_run(tmp_path / "run", scaling_records()))
    assert "frontier" not in section_ids(page) and "frontier" not in page.tables
    assert "Largest batch vs resolution" not in html


# --------------------------------------------------------------------------------------------
# Dense prediction against the paper
# --------------------------------------------------------------------------------------------


def dense_records() -> list[dict]:
    seg = {  # (params, GMACs at 512): ResNet50 ~1 GMAC under the paper's V1c count, PVT-Small agreeing
        "resnet50": (28_480_000, 44.6),
        "pvt_small": (28_150_000, 44.4),
    }
    out = []
    for model, (params, gmacs) in seg.items():
        out.append(cell(model, 512, "infer", task="seg", params=params, gmacs=gmacs, fpn_channels=256, num_classes=150,
                        part_params={"backbone": params - 3_000_000, "neck": 2_500_000, "head": 500_000},
                        part_gmacs={"backbone": gmacs - 10, "neck": 8.0, "head": 2.0}, latency_ms=100.0))
    out.append(cell("pvt_small", (800, 1280), "infer", task="det", params=34_100_000, gmacs=286.0,
                    input_hw=[800, 1280], fpn_channels=256, num_classes=80, latency_ms=2000.0,
                    part_latency_ms={"backbone": 1200.0, "neck": 100.0, "head": 600.0, "postprocess": 100.0}))
    # A detector's backbone at 224 is not the classifier of the paper's Table 2.
    out.append(cell("pvt_small", 224, "infer", task="det", params=34_100_000, gmacs=30.0, latency_ms=50.0))
    return out


def test_dense_section_holds_ours_against_the_paper(tmp_path):
    page, html = page_of(tmp_path, make_run(tmp_path / "run", dense_records()))
    assert "dense" in section_ids(page)
    headers = page.headers["reference-dense"]
    rows = {(r[0], r[1]): r for r in page.tables["reference-dense"]}
    r50 = rows[("Semantic FPN (seg)", "resnet50")]
    paper = PAPER_DENSE_COST["resnet50"]
    assert r50[headers.index("GFLOPs = GMACs, paper")] == fmt_number(paper["seg_gmacs"])
    assert r50[headers.index("GMACs, ours")] == fmt_number(44.6)
    delta = 44.6 - paper["seg_gmacs"]
    assert r50[headers.index("Δ GMACs")] == f"{delta:+.2f} ({delta / paper['seg_gmacs'] * 100:+.1f}%)"
    assert "ResNet-V1c" in r50[headers.index("why it differs")]
    assert r50[headers.index("params split (M)")] == "backbone 25.48 · neck 2.50 · head 0.5"
    pvt = rows[("Semantic FPN (seg)", "pvt_small")]
    assert pvt[headers.index("why it differs")] == "agrees within 2%"
    det = rows[("RetinaNet (det)", "pvt_small")]
    assert det[headers.index("size (H×W)")] == "800×1280"
    assert det[headers.index("GFLOPs = GMACs, paper")] == fmt_number(PAPER_RETINANET_V100["pvt_small"]["gmacs"])
    assert "GFLOPs = GMACs" in headers[headers.index("GFLOPs = GMACs, paper")]
    # The V100 time: shown, and said to be comparable only on a V100.
    v100 = page.tables["reference-dense-v100"]
    assert [r[0] for r in v100] == ["pvt_small"]
    vh = page.headers["reference-dense-v100"]
    assert v100[0][vh.index("paper: ms per image on a V100")] == fmt_number(76.9)
    assert v100[0][vh.index("ours: ms per image")] == fmt_number(2000.0)
    assert v100[0][vh.index("comparable?")].startswith("comparable only on a V100")
    # The detector cell at 224 is not held against the classification Table 2.
    assert "reference" not in page.tables


def test_dense_rows_say_why_a_fine_tune_head_differs(tmp_path):
    rec = cell("pvt_tiny", 64, "det", task="det", kind="finetune", params=15_280_000, fpn_channels=128, num_classes=3,
               map=0.1)
    page, _ = page_of(tmp_path, make_run(tmp_path / "run", [rec]))
    row = page.tables["reference-dense"][0]
    why = row[page.headers["reference-dense"].index("why it differs")]
    assert why == "FPN channels 128 (paper 256); 3 classes (paper 80)"


def test_no_dense_section_without_dense_cells(tmp_path):
    page, html = page_of(tmp_path, make_run(tmp_path / "run", scaling_records()))
    assert "dense" not in section_ids(page)
    assert not {"reference-dense", "reference-dense-v100"} & set(page.tables)


# --------------------------------------------------------------------------------------------
# Flags
# --------------------------------------------------------------------------------------------


def test_flagged_cells_are_counted_and_named_above_the_results(tmp_path):
    records = scaling_records()
    capped = [r for r in records if r["height"] == 800]
    for r in capped:
        r["flags"] = ["time-cap", "few-samples"]
    records[0]["flags"] = ["unstable-timing"]
    page, html = page_of(tmp_path, make_run(tmp_path / "run", records))
    ids = section_ids(page)
    assert ids.index("flags") < ids.index("results")
    lines = statements(html, "flags")
    assert lines[0].startswith(f"{len(capped) + 1} of {len(records)} cells carry flags")
    cap_line = next(s for s in lines if "time cap" in s)
    assert cap_line.startswith(f"{len(capped)} cells hit the time cap")
    assert all(f"{r['model']} @ 800 · infer · batch 1" in cap_line for r in capped)
    assert any(s.startswith("1 cell timed unstably") for s in lines)
    # The fits that use a flagged point say so.
    flagged = page.column("scaling-fits", "flagged points")
    assert any("800 (time-cap, few-samples)" in f for f in flagged)


def test_no_flag_summary_without_flags(tmp_path):
    page, html = page_of(tmp_path, make_run(tmp_path / "run", scaling_records()))
    assert "flags" not in section_ids(page) and "Flagged cells" not in html


# --------------------------------------------------------------------------------------------
# Fine-tunes
# --------------------------------------------------------------------------------------------


def finetune_records(task: str, run_id: str) -> list[dict]:
    score = {"det": "map", "seg": "miou"}[task]
    return [cell(model, 64, task, task=task, kind="finetune", batch=8, pretrained=False, run_id=run_id,
                 loss_curve=[2.0 / (1 + 0.1 * s) + 0.1 * (s % 3) for s in range(40)], params=15_000_000,
                 **{score: 0.1 + 0.1 * i}, throughput=30.0, peak_mem_mb=300.0)
            for i, model in enumerate(("pvt_tiny", "vit_t", "resnet18"))]


def test_finetune_bars_are_labelled_by_backbone(tmp_path):
    runs = [make_run(tmp_path / task, finetune_records(task, f"ft_{task}")) for task in ("det", "seg")]
    df = records_frame(load_runs(runs))
    fig = plot_finetune_metrics(df)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert panels
    for ax in panels:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["pvt_tiny", "vit_t", "resnet18"]


def test_finetune_only_report_has_no_empty_sections(tmp_path):
    runs = [make_run(tmp_path / task, finetune_records(task, f"ft_{task}")) for task in ("det", "seg")]
    page, html = page_of(tmp_path, *runs)
    assert h2s(html) == ["Environment", "Dense prediction against the paper", "Fine-tunes"]
    nav = [a.get("href") for t, a in page.tags if t == "a"]
    assert "#results" not in nav and "#plots" not in nav and "#reference" not in nav
    assert "nothing to" not in html and "No cell" not in html
    captions = " ".join(page.text)
    assert f"smoothing factor {EMA_SMOOTHING:g}" in captions
    alts = [a.get("alt") for t, a in page.tags if t == "img"]
    assert alts == ["Fine-tune loss curves", "Fine-tune metrics"]


def test_committed_finetune_runs_render_without_empty_sections(tmp_path):
    runs = [COMMITTED / "20261125-finetune-seg-cpu", COMMITTED / "20261125-finetune-det-cpu"]
    page, html = page_of(tmp_path, *runs)
    assert "Results" not in h2s(html) and "Plots" not in h2s(html) and "Reference figures" not in h2s(html)
    assert {"finetune-det", "finetune-seg"} <= set(page.tables)


def test_ema_smooths_from_the_first_value():
    assert ema([1.0, 0.0, 0.0], 0.9) == pytest.approx([1.0, 0.9, 0.81])
    assert ema([float("nan"), 2.0, float("nan"), 0.0], 0.5) == pytest.approx([float("nan"), 2.0, 2.0, 1.0], nan_ok=True)


# --------------------------------------------------------------------------------------------
# The whole page
# --------------------------------------------------------------------------------------------


def test_every_section_at_once_stays_self_contained(tmp_path):
    records = scaling_records() + sra_records() + dense_records()
    records.append(cell("resnet50", 224, "train", batch=16, batch_search=[{"batch": 16, "fits": True},
                                                                         {"batch": 32, "fits": False}],
                        latency_ms=10.0, peak_mem_mb=10.0, flags=["time-cap"]))
    page, html = page_of(tmp_path, make_run(tmp_path / "run", records))
    assert {"flags", "results", "scaling", "sra", "frontier", "dense", "plots"} <= set(section_ids(page))
    assert not [t for t, a in page.tags if t == "script" or (t == "link" and a.get("rel") == "stylesheet")]
    assert all(a["src"].startswith("data:image/png;base64,") for t, a in page.tags if t == "img")
    assert not [a for t, a in page.tags if t == "a" and not a.get("href", "").startswith("#")]
    md = render_report([tmp_path / "run"], tmp_path / "report.md", "md").read_text()
    assert "## What spatial-reduction attention buys" in md and "SRA cuts pvt_small's" in md


def test_no_hedged_scaling_claim_in_the_report_code():
    sources = [*sorted((REPO / "bench" / "report").glob("*.py")), REPO / "bench" / "templates" / "report.html.j2"]
    for path in sources:
        assert "close to linear" not in path.read_text().lower(), path


def test_sra_statement_names_a_flagged_timing(tmp_path):
    records = sra_records()
    for r in records:
        if (r["model"], r["height"], r["mode"]) == ("pvt_small", 512, "infer"):
            r["flags"] = ["unstable-timing"]
    page, html = page_of(tmp_path, make_run(tmp_path / "run", records))
    line = next(s for s in statements(html, "sra") if s.startswith("At 512"))
    assert re.search(r"infer latency by [0-9.]+× \([^)]*ms\) \[flagged: unstable-timing\]", line)
    assert "[flagged" not in next(s for s in statements(html, "sra") if s.startswith("At 224"))
