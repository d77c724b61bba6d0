"""INT8 agreement grid (no timing): each model's onnxruntime-int8 outputs against fp32 eager on the
agreement check's fixed input, calibrated as bench.scenarios.deployed calibrates. Its output is
where bench.measure.agreement's onnxruntime-int8 tolerance comes from.

    .venv/bin/python tests/benchmarks/int8_agreement.py resnet18,pvt_tiny 64
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from bench.deploy import DeploySpec, backend_for
from bench.measure.agreement import compare_tensors
from bench.plan import Cell
from bench.scenarios.deployed import calibration_batches
from bench.scenarios.numerics import fixed_input, reference_output
from bench.tasks import task_for


def main(models: list[str], res: list[int], batch: int = 1) -> None:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    for model_name in models:
        for size in res:
            cell = Cell(model_name, size, size, "infer", batch, "cls", "onnxruntime-int8")
            task = task_for("cls")
            model = task.build(cell).eval()
            x = task.input(cell, batch, device, torch.float32, False)
            with tempfile.TemporaryDirectory() as work:
                runtime = backend_for(cell.backend)
                spec = DeploySpec(device, 1, Path(work), calibration_batches(task, cell, batch, device))
                deployed = runtime.build(runtime.export(model, x, spec), x, spec)
                probe = fixed_input(task, cell, batch, device)
                (own,), (ref,) = deployed.infer(probe), reference_output(task, model, probe)
                o = compare_tensors("logits", None, own, ref)
                top1 = float((own.argmax(-1) == ref.argmax(-1)).float().mean())
                print(f"{model_name} {size}: cosine {o.cosine:.6f} rel_l2 {o.rel_l2:.4g} max_abs {o.max_abs:.4g} "
                      f"top-1 agreement {top1:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","), [int(r) for r in sys.argv[2].split(",")])
