"""Torch-TensorRT on a GPU: the cell's ``torch.export`` program compiled by
``torch_tensorrt.dynamo.compile`` at fp32 (static shapes), the engine serialised to measure its
size. Imported lazily: where torch_tensorrt is not installed the cell is recorded
``backend-unavailable``; on a CPU run ``--backend tensorrt`` is refused as bad input."""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from bench.deploy.base import (
    Backend,
    BackendUnavailable,
    DeployCosts,
    Deployed,
    DeploySpec,
    Exported,
    import_runtime,
    outputs_of,
)
from bench.deploy.registry import register_backend


def _torch_tensorrt():
    return import_runtime("torch_tensorrt", "a GPU-only extra")


@register_backend
class TensorRt(Backend):
    name = "tensorrt"
    cuda_only = True

    def export(self, model: nn.Module, example: torch.Tensor, spec: DeploySpec) -> Exported:
        _torch_tensorrt()  # not installed: said before the export is paid for
        if spec.device.type != "cuda":
            raise BackendUnavailable("TensorRT runs on a CUDA device only")
        return super().export(model.to(spec.device), example.to(spec.device), spec)

    def build(self, exported: Exported, example: torch.Tensor, spec: DeploySpec) -> Deployed:
        torch_tensorrt = _torch_tensorrt()
        resident = example.to(spec.device).contiguous()
        export_s = exported.seconds
        t0 = time.perf_counter()
        engine = torch_tensorrt.dynamo.compile(exported.artifact, inputs=[resident],
                                               enabled_precisions={torch.float32})
        torch.cuda.synchronize(spec.device)
        build_s = time.perf_counter() - t0
        path = spec.workdir / "model.ep"
        torch_tensorrt.save(engine, str(path), inputs=[resident])
        costs = DeployCosts("torch_tensorrt", torch_tensorrt.__version__, export_s, build_s, path.stat().st_size,
                            ["TensorRT"], {"enabled_precisions": "fp32"})

        @torch.inference_mode()
        def step():
            return engine(resident)

        @torch.inference_mode()
        def infer(x: torch.Tensor) -> list[torch.Tensor]:
            return outputs_of(engine(x.to(spec.device).contiguous()))

        return Deployed(step, infer, costs)
