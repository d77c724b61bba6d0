"""``bench flops``: parameters, GMACs and GFLOPs per model and size, per stage and part."""
from __future__ import annotations

import json

import click

from bench import config as cfgmod
from bench.errors import first_line


@click.command("flops")
@click.option("--models", "models_text", required=True,
              help="Comma-separated model names, e.g. pvt_small,vit_s,resnet50.")
@click.option("--task", type=click.Choice(cfgmod.TASKS), default="cls", show_default=True,
              help="cls: the backbone as a classifier; det: RetinaNet + FPN (+P6/P7) + head; seg: Semantic FPN.")
@click.option("--res", "res_text", default=None,
              help="Sizes, height first: 224,512, 512x640 or a range 224:1024:64 "
                   "[default: cls 224, det 800x1280 (padded to 32), seg 512].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.option("--no-cross-check", is_flag=True,
              help="Skip the independent torch.utils.flop_counter count (explicit-attention path).")
def flops_command(models_text: str, task: str, res_text: str | None, as_json: bool, no_cross_check: bool) -> None:
    """Parameters, GMACs and GFLOPs (= 2 x GMACs) per model and resolution, per stage and part.

    A size whose count does not fit in memory is printed as an oom row; the others go on."""
    names = cfgmod.parse_models(models_text)
    sizes = cfgmod.parse_resolutions(res_text or cfgmod.DEFAULT_FLOPS_RES[task], 1 if task == "det" else 32)
    from bench.environment import flush_denormals
    from bench.measure.flops import print_flops_table

    flush_denormals()  # torch from here on, before any torch op starts the OpenMP worker threads
    rows, reports = _count_all(names, sizes, task, not no_cross_check, as_json)
    if as_json:
        click.echo(json.dumps(rows, indent=2, allow_nan=False))
    else:
        print_flops_table(reports)
        for row in rows:
            if row["status"] != "ok":
                click.echo(f"{row['model']}@{row['res']}: {row['status']}: {row['error']}", err=True)
    _warn_disagreements(reports)


def _count_all(names: list[str], sizes: list[tuple[int, int]], task: str, cross_check: bool,
               quiet: bool) -> tuple[list[dict], list]:
    """One row per model x size (ok, oom or error) and the reports of those that counted."""
    import torch

    from bench.measure.flops import count_flops
    from bench.measure.memory import free_memory, is_oom
    from bench.plan import Cell
    from bench.scenarios import dense
    from models import create_model

    rows: list[dict] = []
    reports = []
    for name in names:
        model = create_model(name) if task == "cls" else None
        for h, w in sizes:
            cell = Cell(name, h, w, "infer", 1, task)
            try:
                if task == "cls":
                    report = count_flops(model, name, h, w, cross_check=cross_check)
                else:
                    report = dense.count(cell)
                    if (h, w) != tuple(report.input_hw) and not quiet:
                        click.echo(f"{name}: {h}x{w} padded to {report.input_hw[0]}x{report.input_hw[1]} "
                                   "(a multiple of 32, as mmdet pads)", err=True)
            except Exception as exc:  # noqa: BLE001 - one size that does not fit must not end the table
                rows.append({"model": name, "task": task, "res": cell.res, "status": "oom" if is_oom(exc) else "error",
                             "error": first_line(exc, 200, with_type=True)})
                free_memory(torch.device("cpu"))
                continue
            reports.append(report)
            rows.append({**report.as_dict(), "status": "ok"})
    return rows, reports


def _warn_disagreements(reports: list) -> None:
    from bench.measure.flops import CROSS_CHECK_TOLERANCE

    for r in reports:
        if r.crosscheck_rel_diff is not None and r.crosscheck_rel_diff > CROSS_CHECK_TOLERANCE:
            click.echo(f"warning: {r.model}@{r.res}: fvcore and torch.utils.flop_counter (explicit attention) disagree "
                       f"by {100 * r.crosscheck_rel_diff:.2f}% on matmul/conv/attention", err=True)
