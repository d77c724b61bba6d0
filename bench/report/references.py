"""Reference figures from the PVT paper and published benchmarks, and the tables that hold
ours against them where a run measured the same thing."""
from __future__ import annotations

import pandas as pd

from bench.report.tables import Cell, Table, as_text, fmt_number, fmt_optional, missing_cell, sort_cells

# PVT v1 paper (Wang et al., 2021), Table 2: ImageNet-1k classification at 224x224. The paper's
# "GFLOPs" count one multiply-add as one operation, i.e. they are GMACs.
PAPER_TABLE2: dict[str, tuple[str, float, float]] = {
    # our name: (paper's name, params in millions, GMACs)
    "resnet18": ("ResNet18", 11.7, 1.8),
    "pvt_tiny": ("PVT-Tiny", 13.2, 1.9),
    "resnet50": ("ResNet50", 25.6, 4.1),
    "vit_s": ("DeiT-Small/16", 22.1, 4.6),
    "pvt_small": ("PVT-Small", 24.5, 3.8),
    "resnet101": ("ResNet101", 44.7, 7.9),
    "pvt_medium": ("PVT-Medium", 44.2, 6.7),
    "vit_b": ("ViT-Base/16", 86.6, 17.6),
    "pvt_large": ("PVT-Large", 61.4, 9.8),
}

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
    at224 = df[(df["res"] == "224") & df["model"].isin(list(PAPER_TABLE2))]
    rows = []
    for model, part in at224.groupby("model", sort=False):
        params = part["params"].dropna()
        gmacs = part["gmacs"].dropna()
        if params.empty and gmacs.empty:
            continue
        paper_name, paper_params, paper_gmacs = PAPER_TABLE2[model]
        row = [Cell(model), Cell(paper_name)]
        for ours, paper, scale in ((params, paper_params, 1e-6), (gmacs, paper_gmacs, 1.0)):
            if ours.empty:
                row += [missing_cell("not measured"), Cell(fmt_number(paper), kind="num"), missing_cell()]
                continue
            value = float(ours.iloc[0]) * scale
            row += [Cell(fmt_number(value), kind="num"), Cell(fmt_number(paper), kind="num"),
                    Cell(f"{(value - paper) / paper * 100:+.1f}%", kind="num")]
        rows.append(row)
    if not rows:
        return None
    columns = ["model", "paper name", "params (M), ours", "params (M), paper", "Δ params",
               "GMACs, ours", "GFLOPs = GMACs, paper", "Δ GMACs"]
    return Table("reference", "Against the paper (PVT v1, Table 2, 224×224)", columns, rows, REFERENCE_NOTES)


def throughput_reference_table(df: pd.DataFrame) -> Table | None:
    """Our inference throughput at 224 next to the published GPU figures, saying whether the
    two are comparable at all."""
    part = df[(df["res"] == "224") & (df["mode"] == "infer") & (df["status"] == "ok")
              & df["model"].isin(list(PUBLISHED_THROUGHPUT)) & df["throughput"].notna()]
    rows = []
    for _, r in sort_cells(part).iterrows():
        published = PUBLISHED_THROUGHPUT[r["model"]]
        same_gpu = [gpu for gpu in published if gpu.replace(" ", "").lower() in str(r["device_name"]).replace(" ", "").lower()]
        verdict = (f"same GPU family as the {same_gpu[0]} figure; check dtype and batch" if same_gpu
                   else f"not comparable: measured on {r['device_name']}")
        rows.append([Cell(r["model"]), Cell(as_text(r["batch"])), Cell(as_text(r["dtype"])), Cell(r["setup"]),
                     Cell(fmt_number(float(r["throughput"])), kind="num"),
                     Cell(fmt_optional(published.get("V100")), kind="num"),
                     Cell(fmt_optional(published.get("RTX 4090")), kind="num"),
                     Cell(verdict)])
    if not rows:
        return None
    columns = ["model", "batch", "dtype", "run", "throughput (img/s), ours", "V100, published",
               "RTX 4090, published", "comparable?"]
    return Table("reference-throughput", "Against published throughput (224×224)", columns, rows, THROUGHPUT_NOTES)


def paper_dense_score(model: str, task: str) -> str:
    """The paper's detection AP or segmentation mIoU for a backbone, "—" where it has none."""
    return fmt_optional(PAPER_DENSE.get(model, {}).get(task))
