"""OpenVINO on the CPU: the cell's ``torch.export`` program converted by ``openvino.convert_model``
(the same export ONNX Runtime and AOTInductor start from, so a model that cannot be exported fails
alike everywhere), saved as IR (its size is the artifact) and compiled for "CPU" with
INFERENCE_NUM_THREADS = the cell's threads, one stream (no inter-request parallelism), the LATENCY
hint and INFERENCE_PRECISION_HINT f32: on a CPU with bf16 or AMX units OpenVINO would otherwise
run bf16, which is another math than the fp32 eager cell's. The compiled model's own properties
are recorded, not what was asked."""
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
    ExportFailed,
    export_failure,
    import_runtime,
    size_of,
)
from bench.deploy.registry import register_backend

READ_BACK = ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT",
             "EXECUTION_DEVICES")


def _conversion_failure(exc: BaseException) -> ExportFailed:
    """OpenVINO's converter refusing the exported program is an export failure (status
    export-failed), named by its own line that says which ops it has no rule for; its first line
    ("Check 'false' failed at src/frontends/...") says nothing."""
    failure = export_failure(exc)
    named = next((line.strip() for line in str(exc).splitlines() if "No conversion rule" in line), None)
    return ExportFailed(f"{type(exc).__name__}: {named}", failure.op) if named else failure


def _openvino():
    _no_telemetry()
    return import_runtime("openvino", "pip install -e '.[deploy]'")


def _no_telemetry() -> None:
    """OpenVINO reports its import and each conversion to Google Analytics (openvino_telemetry, on
    unless a consent file says no), each event from a forked process. bench sends nothing
    anywhere; and that fork, made while torch's threads run, hung in the resolver's lock in a test
    run (the child waited forever, and bench with it). Marked absent before OpenVINO is imported,
    the package falls back to OpenVINO's own stub (openvino.tools.ovc.telemetry_stub), as where
    it is not installed."""
    import sys

    if "openvino_telemetry" not in sys.modules:  # already loaded by the caller's own code: theirs
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]


@register_backend
class OpenVino(Backend):
    name = "openvino"

    def export(self, model: nn.Module, example: torch.Tensor, spec: DeploySpec) -> Exported:
        _openvino()  # not installed: said before the export is paid for
        if spec.device.type != "cpu":
            raise BackendUnavailable("bench runs OpenVINO on the CPU only; run it with --device cpu")
        return super().export(model, example, spec)

    def build(self, exported: Exported, example: torch.Tensor, spec: DeploySpec) -> Deployed:
        ov = _openvino()
        export_s = exported.seconds
        t0 = time.perf_counter()
        try:
            converted = ov.convert_model(exported.artifact)
        except Exception as exc:  # noqa: BLE001 - the converter's refusal is the cell's finding
            raise _conversion_failure(exc) from exc
        xml = spec.workdir / "model.xml"
        ov.save_model(converted, str(xml), compress_to_fp16=False)
        compiled = ov.Core().compile_model(converted, "CPU", {
            "INFERENCE_NUM_THREADS": spec.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        resident = example.detach().cpu().contiguous().numpy()
        request.set_input_tensor(ov.Tensor(resident, shared_memory=True))
        build_s = time.perf_counter() - t0
        settings = {key: str(compiled.get_property(key)) for key in READ_BACK[:-1]}
        devices = [str(d) for d in compiled.get_property("EXECUTION_DEVICES")]
        costs = DeployCosts("openvino", ov.get_version(), export_s, build_s, size_of(xml, xml.with_suffix(".bin")),
                            devices, settings)

        def step():
            request.infer()

        def infer(x: torch.Tensor) -> list[torch.Tensor]:
            other = compiled.create_infer_request()
            result = other.infer({0: x.detach().cpu().contiguous().numpy()})
            return [torch.from_numpy(result[out].copy()) for out in compiled.outputs]

        return Deployed(step, infer, costs)
