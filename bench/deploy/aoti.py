"""AOTInductor: the cell's ``torch.export`` program compiled ahead of time into a shared library
and packaged (``torch._inductor.aoti_compile_and_package``, the .pt2 is the artifact), loaded back
with ``aoti_load_package`` and called as a deployment calls it. Its CPU kernels use OpenMP with
torch's intra-op thread count, which bench run sets to the cell's threads."""
from __future__ import annotations

import time

import torch

from bench.deploy.base import Backend, DeployCosts, Deployed, DeploySpec, Exported, outputs_of, size_of
from bench.deploy.registry import register_backend


@register_backend
class AotInductor(Backend):
    name = "aoti"

    def build(self, exported: Exported, example: torch.Tensor, spec: DeploySpec) -> Deployed:
        from torch._inductor import aoti_compile_and_package, aoti_load_package

        export_s = exported.seconds
        t0 = time.perf_counter()
        package = aoti_compile_and_package(exported.artifact, package_path=str(spec.workdir / "model.pt2"))
        runner = aoti_load_package(package)
        build_s = time.perf_counter() - t0
        resident = example.contiguous()
        costs = DeployCosts("torch", torch.__version__, export_s, build_s, size_of(spec.workdir / "model.pt2"),
                            [spec.device.type], {"intra_op_threads": torch.get_num_threads()})

        @torch.inference_mode()
        def step():
            return runner(resident)

        @torch.inference_mode()
        def infer(x: torch.Tensor) -> list[torch.Tensor]:
            return outputs_of(runner(x.to(resident.device).contiguous()))

        return Deployed(step, infer, costs)
