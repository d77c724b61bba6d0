"""The agreement of every faster math mode with the fp32 eager reference over a grid of models, sizes,
modes and batches (issue 17): what the tolerance table in bench/measure/agreement.py was chosen from.

Usage: python tests/benchmarks/agreement_grid.py OUT.jsonl -- appends one JSON line per case (about an
hour on 2 CPU cores, most of it torch.compile). Random weights, seed 0, as bench run builds them.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch

from bench.config import RunConfig
from bench.plan import make_cells
from bench.scenarios.numerics import check_agreement
from bench.tasks import task_for

MODELS = ["resnet18", "pvt_tiny", "resnet50", "vit_s", "pvt_small"]
KEPT = ("mode", "worst_cosine", "worst_rel_l2", "grad_cosine", "loss_rel_err", "task_agreement", "failures")


def grid() -> list[tuple]:
    cases = [("cls", model, res, mode, dtype, comp, cl)
             for model in MODELS for res in (64, 224) for mode in ("infer", "train")
             for dtype, comp, cl in (("bf16", 0, 0), ("fp16", 0, 0), ("bf16-weights", 0, 0), ("fp32", 0, 1))]
    for model, res in [("resnet18", 64), ("pvt_tiny", 64), ("resnet50", 224), ("vit_s", 224), ("pvt_small", 224)]:
        for mode in ("infer", "train"):
            cases += [("cls", model, res, mode, "fp32", 1, 0), ("cls", model, res, mode, "bf16", 1, 0)]
    cases += [(task, model, res, "infer", dtype, 0, 0) for task in ("det", "seg") for model in ("resnet18", "pvt_tiny")
              for dtype in ("bf16", "fp16", "bf16-weights") for res in (64, 128)]
    return cases


def main(path: str) -> None:
    with open(path, "a") as out:
        for batch in (1, 2):
            for task_name, model, res, mode, dtype, comp, cl in grid():
                if comp and batch == 2:
                    continue
                cell = make_cells([model], [(res, res)], [mode], [batch], task_name)[0]
                task = task_for(task_name)
                torch.manual_seed(0)
                built = task.build(cell)
                cfg = dataclasses.replace(RunConfig(), dtype=dtype, compile=bool(comp), channels_last=bool(cl))
                t0 = time.time()
                try:
                    found, error = check_agreement(task, cell, built, batch, torch.device("cpu"), cfg).to_record(), None
                    found = found["agreement"]
                except Exception as exc:  # noqa: BLE001 - a case that fails is written down, the grid goes on
                    found, error = {}, repr(exc)[:200]
                case = {"task": task_name, "model": model, "res": res, "cell_mode": mode, "dtype": dtype,
                        "compile": comp, "channels_last": cl, "batch": batch, "s": round(time.time() - t0, 2),
                        "error": error}
                out.write(json.dumps(case | {k: found.get(k) for k in KEPT}
                                     | {"per_output": found.get("per_output")}) + "\n")
                out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
