"""Reference figures from the PVT paper and published benchmarks, and the tables that hold
ours against them where a run measured the same thing."""
from __future__ import annotations

import pandas as pd

from bench.report.tables import Table, TableCell, as_text, fmt_number, fmt_optional, missing_cell, sort_cells
from models.references import PVT_V1_TABLE2

# PVT v1 paper (Wang et al., 2021), Table 2 (params, GMACs at 224x224): kept once, with the models.
PAPER_TABLE2 = PVT_V1_TABLE2

# Published inference throughput at 224 (images/s): the V100 column is the survey table citing
# DeiT and T2T; the RTX 4090 column is timm's published benchmark CSV (AMP, batch 1024).
PUBLISHED_THROUGHPUT: dict[str, dict[str, float]] = {
    "resnet50": {"V100": 1226, "RTX 4090": 4302.8},
    "vit_s": {"V100": 940, "RTX 4090": 8214.7},
    "pvt_small": {"V100": 820},
}

# PVT v1 paper, Tables 3, 5 and 11: RetinaNet (COCO, 1x schedule) box AP and Semantic FPN
# (ADE20K) mIoU, both in percent.
PAPER_DENSE: dict[str, dict[str, float]] = {
    "resnet18": {"det": 31.8, "seg": 32.9},
    "pvt_tiny": {"det": 36.7, "seg": 35.7},
    "resnet50": {"det": 36.3, "seg": 36.7},
    "pvt_small": {"det": 40.4, "seg": 39.8},
}

REFERENCE_NOTES = [
    "The paper's “GFLOPs” count a multiply-add as one operation, so they are compared with our "
    "GMACs; our GFLOPs (recorded as 2 × GMACs) are twice that.",
    "FLOP counters disagree on what to count: ours counts the multiply-adds of convolutions, "
    "linear layers and attention matmuls and skips softmax, normalisation, activations and "
    "additions, so a few percent either way is expected.",
    "Parameters include the 1000-class head. The paper's ViT-S row is DeiT-Small/16, the same "
    "architecture as our vit_s; its ViT-B row is ViT-Base/16 = DeiT-Base/16.",
]

THROUGHPUT_NOTES = [
    "Published throughputs were measured on V100 and RTX 4090 GPUs (timm's with AMP at batch "
    "1024); they are only comparable with a run on the same GPU, dtype and batch. A CPU run is "
    "never comparable — the column is shown for scale only.",
]

DENSE_NOTES = [
    "The paper trains RetinaNet on COCO for 12 epochs at a shorter side of 800 and Semantic FPN "
    "on ADE20K for 80k iterations; a short fine-tune on a small set will score far lower. "
    "Compare backbones with each other within a run, not with the paper.",
]


def reference_table(df: pd.DataFrame) -> Table | None:
    """Our params and GMACs at 224×224 next to the paper's Table 2, for the models it lists."""
    at224 = df[(df["res"] == "224") & (df["task"] == "cls") & df["model"].isin(list(PAPER_TABLE2))]
    rows = []
    for model, part in at224.groupby("model", sort=False):
        params = part["params"].dropna()
        gmacs = part["gmacs"].dropna()
        if params.empty and gmacs.empty:
            continue
        paper_name, paper_params, paper_gmacs = PAPER_TABLE2[model]
        row = [TableCell(model), TableCell(paper_name)]
        for ours, paper, scale in ((params, paper_params, 1e-6), (gmacs, paper_gmacs, 1.0)):
            if ours.empty:
                row += [missing_cell("not measured"), TableCell(fmt_number(paper), kind="num"), missing_cell()]
                continue
            value = float(ours.iloc[0]) * scale
            row += [TableCell(fmt_number(value), kind="num"), TableCell(fmt_number(paper), kind="num"),
                    TableCell(f"{(value - paper) / paper * 100:+.1f}%", kind="num")]
        rows.append(row)
    if not rows:
        return None
    columns = ["model", "paper name", "params (M), ours", "params (M), paper", "Δ params",
               "GMACs, ours", "GFLOPs = GMACs, paper", "Δ GMACs"]
    return Table("reference", "Against the paper (PVT v1, Table 2, 224×224)", columns, rows, REFERENCE_NOTES)


def throughput_reference_table(df: pd.DataFrame) -> Table | None:
    """Our inference throughput at 224 next to the published GPU figures, saying whether the
    two are comparable at all."""
    part = df[(df["res"] == "224") & (df["mode"] == "infer") & (df["task"] == "cls") & (df["status"] == "ok")
              & df["model"].isin(list(PUBLISHED_THROUGHPUT)) & df["throughput"].notna()]
    rows = []
    for _, r in sort_cells(part).iterrows():
        published = PUBLISHED_THROUGHPUT[r["model"]]
        device = str(r["device_name"]).replace(" ", "").lower()
        same_gpu = [gpu for gpu in published if gpu.replace(" ", "").lower() in device]
        verdict = (f"same GPU family as the {same_gpu[0]} figure; check dtype and batch" if same_gpu
                   else f"not comparable: measured on {r['device_name']}")
        rows.append([TableCell(r["model"]), TableCell(as_text(r["batch"])), TableCell(as_text(r["dtype"])),
                     TableCell(r["setup"]),
                     TableCell(fmt_number(float(r["throughput"])), kind="num"),
                     TableCell(fmt_optional(published.get("V100")), kind="num"),
                     TableCell(fmt_optional(published.get("RTX 4090")), kind="num"),
                     TableCell(verdict)])
    if not rows:
        return None
    columns = ["model", "batch", "dtype", "run", "throughput (img/s), ours", "V100, published",
               "RTX 4090, published", "comparable?"]
    return Table("reference-throughput", "Against published throughput (224×224)", columns, rows, THROUGHPUT_NOTES)


def paper_dense_score(model: str, task: str) -> str:
    """The paper's detection AP or segmentation mIoU for a backbone, "—" where it has none."""
    return fmt_optional(PAPER_DENSE.get(model, {}).get(task))


# --------------------------------------------------------------------------------------------
# Dense prediction: the whole detector and segmenter, against the paper
# --------------------------------------------------------------------------------------------

# PVT v1 paper (Wang et al., 2021), dense-prediction tables (Tables 3, 5 and 11; COCO 1x
# schedule, ADE20K), as collected in shared/reference/README.md: RetinaNet parameters, Semantic
# FPN parameters and "GFLOPs" at 512×512. The paper's "GFLOPs" count one multiply-add as one
# operation: they are GMACs, and are compared with ours as such.
PAPER_DENSE_COST: dict[str, dict[str, float | str]] = {
    # our name: paper's name, RetinaNet params (M), Semantic FPN params (M), Semantic FPN GMACs at 512
    "resnet18": {"name": "ResNet18", "det_params_m": 21.3, "seg_params_m": 15.5, "seg_gmacs": 32.2},
    "pvt_tiny": {"name": "PVT-Tiny", "det_params_m": 23.0, "seg_params_m": 17.0, "seg_gmacs": 33.2},
    "resnet50": {"name": "ResNet50", "det_params_m": 37.7, "seg_params_m": 28.5, "seg_gmacs": 45.6},
    "pvt_small": {"name": "PVT-Small", "det_params_m": 34.2, "seg_params_m": 28.2, "seg_gmacs": 44.5},
}
# Same paper and tables: RetinaNet time per image on one V100 at a shorter side of 800, with its
# "GFLOPs" (= GMACs), which mmdet's get_flops counts at 800×1280 (H×W).
PAPER_RETINANET_V100: dict[str, dict[str, float]] = {
    "resnet50": {"ms": 55.9, "gmacs": 239.3},
    "pvt_small": {"ms": 76.9, "gmacs": 285.8},
}
# The input size (H, W) each paper count was made at, the head it describes and its classes.
DENSE_SIZE = {"det": (800, 1280), "seg": (512, 512)}
DENSE_HEAD = {"det": "RetinaNet", "seg": "Semantic FPN"}
PAPER_CLASSES = {"det": 80, "seg": 150}  # COCO, ADE20K
PAPER_FPN_CHANNELS = 256
AGREE_PERCENT = 2.0  # within this, a row agrees with the paper
PART_ORDER = ("backbone", "neck", "head", "postprocess")

RESNET_V1C_REASON = (
    "mmseg's ResNets are ResNet-V1c (a deep stem of three 3×3 convolutions instead of one 7×7): "
    "about 1 GMAC more at 512 than the ResNet we build, and ~0.02 M more parameters")

DENSE_REFERENCE_NOTES = [
    "The paper's “GFLOPs” count a multiply-add as one operation: they are GMACs, and are "
    "compared with our GMACs (not with 2 × GMACs).",
    "The paper counts RetinaNet at 800×1280 (H×W, mmdet's get_flops) and Semantic FPN at "
    "512×512; our GMACs are compared only where a cell fed the model that size.",
    "Parts are counted independently (backbone, neck = FPN, head); a row that differs says why "
    "where the cause is known.",
]

V100_NOTES = [
    "The paper's times are one image on one V100 GPU: comparable only on a V100 (and then only "
    "at the same precision); on any other device they are shown for scale. Ours are the median "
    "latency of an inference cell divided by its batch, and so is its split into parts.",
]


def _hw(r: pd.Series) -> tuple[int, int] | None:
    hw = r.get("input_hw")
    if isinstance(hw, (list, tuple)) and len(hw) == 2:
        return int(hw[0]), int(hw[1])
    if pd.notna(r.get("height")):
        return int(r["height"]), int(r["width"] if pd.notna(r.get("width")) else r["height"])
    return None


def _config_differences(r: pd.Series, task: str) -> list[str]:
    """How the recorded head differs from the paper's (FPN width, classes), where recorded."""
    out = []
    fpn, classes = r.get("fpn_channels"), r.get("num_classes")
    if pd.notna(fpn) and int(fpn) != PAPER_FPN_CHANNELS:
        out.append(f"FPN channels {int(fpn)} (paper {PAPER_FPN_CHANNELS})")
    if pd.notna(classes) and int(classes) != PAPER_CLASSES[task]:
        out.append(f"{int(classes)} classes (paper {PAPER_CLASSES[task]})")
    return out


def _split(parts, scale: float = 1.0) -> str:
    if not isinstance(parts, dict) or not parts:
        return "—"
    names = [p for p in PART_ORDER if p in parts] + [p for p in parts if p not in PART_ORDER]
    return " · ".join(f"{p} {fmt_number(float(parts[p]) * scale)}" for p in names
                      if isinstance(parts[p], (int, float)))


def _delta(ours: float, paper: float) -> str:
    return f"{ours - paper:+.2f} ({(ours - paper) / paper * 100:+.1f}%)"


def dense_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Cells of a whole detector or segmenter (task det or seg, a benchmark or a fine-tune)
    with a parameter or GMAC count, for the backbones the paper lists; the paper's set-up first
    (its FPN width and classes), then finished cells."""
    part = df[df["task"].isin(list(DENSE_SIZE)) & df["model"].isin(list(PAPER_DENSE_COST))
              & (df["params"].notna() | df["gmacs"].notna())].copy()
    if part.empty:
        return part
    part["config_differs"] = [len(_config_differences(r, r["task"])) for _, r in part.iterrows()]
    part["not_ok"] = part["status"] != "ok"
    return part.sort_values(["task", "model_order", "config_differs", "not_ok", "series_order"], kind="stable")


def dense_reference_table(df: pd.DataFrame) -> Table | None:
    """Our detector and segmenter parameters and GMACs beside the paper's, with Δ and the reason
    where a row differs."""
    cells = dense_cells(df)
    rows = []
    for (task, model), part in cells.groupby(["task", "model"], sort=False):
        paper = PAPER_DENSE_COST[model]
        with_params = part[part["params"].notna()]
        size = DENSE_SIZE[task]
        at_size = part[part["gmacs"].notna() & part.apply(lambda r, size=size: _hw(r) == size, axis=1)]
        other_sizes = part[part["gmacs"].notna()]
        r = with_params.iloc[0] if not with_params.empty else part.iloc[0]
        g = at_size.iloc[0] if not at_size.empty else None
        reasons = _config_differences(r, task)
        deltas = []
        row = [TableCell(f"{DENSE_HEAD[task]} ({task})"), TableCell(model), TableCell(str(paper["name"]))]
        paper_params = float(paper[f"{task}_params_m"])
        if not with_params.empty:
            ours = float(r["params"]) / 1e6
            deltas.append((ours - paper_params) / paper_params * 100)
            row += [TableCell(fmt_number(ours), kind="num"), TableCell(fmt_number(paper_params), kind="num"),
                    TableCell(_delta(ours, paper_params), kind="num")]
        else:
            row += [missing_cell("not counted"), TableCell(fmt_number(paper_params), kind="num"), missing_cell()]
        paper_gmacs = paper.get("seg_gmacs") if task == "seg" else PAPER_RETINANET_V100.get(model, {}).get("gmacs")
        size_text = f"{size[0]}×{size[1]}"
        if g is not None:
            ours_g = float(g["gmacs"])
            row += [TableCell(size_text), TableCell(fmt_number(ours_g), kind="num")]
            if paper_gmacs is not None:
                deltas.append((ours_g - float(paper_gmacs)) / float(paper_gmacs) * 100)
                row += [TableCell(fmt_number(float(paper_gmacs)), kind="num"),
                        TableCell(_delta(ours_g, float(paper_gmacs)), kind="num")]
            else:
                row += [missing_cell("not in the paper"), missing_cell()]
            reasons += [d for d in _config_differences(g, task) if d not in reasons]
        else:
            sizes = sorted({hw for hw in (_hw(x) for _, x in other_sizes.iterrows()) if hw},
                           key=lambda hw: hw[0] * hw[1])
            only = f" (only at {', '.join(f'{h}×{w}' for h, w in sizes)})" if sizes else ""
            row += [TableCell(size_text), missing_cell("not measured" + only),
                    TableCell(fmt_number(float(paper_gmacs)), kind="num") if paper_gmacs is not None
                    else missing_cell("not in the paper"),
                    missing_cell()]
        split_from = g if g is not None else r
        row += [TableCell(_split(r.get("part_params"), 1e-6)), TableCell(_split(split_from.get("part_gmacs")))]
        if task == "seg" and model.startswith("resnet"):
            reasons.append(RESNET_V1C_REASON)
        if not reasons:
            if deltas and max(abs(d) for d in deltas) <= AGREE_PERCENT:
                reasons.append(f"agrees within {AGREE_PERCENT:g}%")
            elif deltas:
                reasons.append("no known cause: check the head's configuration against the paper's")
        differs = bool(deltas) and max(abs(d) for d in deltas) > AGREE_PERCENT
        row.append(TableCell("; ".join(reasons), kind="note warn" if differs else "note"))
        rows.append(row)
    if not rows:
        return None
    columns = ["model head", "backbone", "paper name", "params (M), ours", "params (M), paper", "Δ params (M)",
               "size (H×W)", "GMACs, ours", "GFLOPs = GMACs, paper", "Δ GMACs", "params split (M)",
               "GMACs split", "why it differs"]
    # The part splits only where some cell recorded one.
    empty = {i for i, c in enumerate(columns) if "split" in c and all(row[i].text == "—" for row in rows)}
    columns = [c for i, c in enumerate(columns) if i not in empty]
    rows = [[cell for i, cell in enumerate(row) if i not in empty] for row in rows]
    return Table("reference-dense", "Dense prediction against the paper: the whole model", columns, rows,
                 DENSE_REFERENCE_NOTES)


def v100_reference_table(df: pd.DataFrame) -> Table | None:
    """The paper's RetinaNet time per image on a V100 beside ours, for the backbones some det
    cell ran with; ours is the median inference latency per image at 800."""
    det = df[(df["task"] == "det") & df["model"].isin(list(PAPER_RETINANET_V100))]
    rows = []
    for model in dict.fromkeys(det["model"]):
        paper = PAPER_RETINANET_V100[model]
        timed = det[(det["model"] == model) & (det["mode"] == "infer") & (det["status"] == "ok")
                    & det["latency_ms"].notna()]
        at800 = timed[timed.apply(lambda r: (_hw(r) or (0, 0))[0] == 800, axis=1)]
        row = [TableCell(model), TableCell(str(PAPER_DENSE_COST[model]["name"])), TableCell(fmt_number(paper["ms"]),
                                                                                            kind="num")]
        if at800.empty:
            row += [missing_cell("no inference cell at 800"), missing_cell(), missing_cell(), missing_cell(),
                    TableCell("comparable only on a V100")]
        else:
            r = sort_cells(at800).iloc[0]
            batch = float(r["batch"]) if pd.notna(r["batch"]) and r["batch"] else 1.0
            hw = _hw(r)
            on_v100 = "v100" in str(r["device_name"]).lower()
            row += [TableCell(fmt_number(float(r["latency_ms"]) / batch), kind="num"),
                    TableCell(f"{hw[0]}×{hw[1]}" if hw else "—"),
                    TableCell(f"{r['device_name']} · {r['precision']} · batch {as_text(r['batch'])}"),
                    TableCell(_split(r.get("part_latency_ms"), 1.0 / batch)),
                    TableCell("a V100: comparable at the same precision" if on_v100
                         else f"comparable only on a V100: not comparable, ran on {r['device_name']}",
                         kind="" if on_v100 else "warn")]
        rows.append(row)
    if not rows:
        return None
    columns = ["backbone", "paper name", "paper: ms per image on a V100", "ours: ms per image", "size (H×W)",
               "measured on", "our time split (ms)", "comparable?"]
    return Table("reference-dense-v100", "RetinaNet time per image at 800: the paper's V100", columns, rows, V100_NOTES)
