"""ONNX Runtime: the ONNX file ``torch.onnx.export(..., dynamo=True)`` writes from the cell's
``torch.export`` program, run by an ``InferenceSession`` with intra-op threads = the cell's
threads, inter-op 1, sequential execution, every graph optimisation on. CPU EP here; on a GPU the
CUDA EP (onnxruntime-gpu) with the input and output bound on the device (IOBinding), so the timed
step copies nothing. The providers the session actually uses are recorded: a session that fell
back to the CPU EP is refused (``provider-fallback``), never timed as if it were the GPU's.

``onnxruntime-int8``: the same file quantized by ORT's post-training static quantization
(``quantize_static``: QDQ, per-channel int8 weights, uint8 activations, MinMax calibration) on
the fixed calibration images the caller generated, then run like the fp32 file.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from bench.deploy.base import (
    FALLBACK_FLAG,
    Backend,
    BackendUnavailable,
    DeployCosts,
    Deployed,
    DeploySpec,
    Exported,
    export_failure,
    export_program,
    import_runtime,
    size_of,
)
from bench.deploy.registry import register_backend

#: the calibration method, in words for the record
CALIBRATION = "MinMax over the calibration images; QDQ, per-channel int8 weights, uint8 activations"


def _ort():
    return import_runtime("onnxruntime", "pip install -e '.[deploy]'")


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> float:
    """The cell's model as an ONNX file through torch.export (the dynamo exporter); its seconds."""
    program, export_s = export_program(model, example)
    t0 = time.perf_counter()
    try:
        torch.onnx.export(program, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                          optimize=True)
    except Exception as exc:  # noqa: BLE001 - the translation's refusal is the finding
        raise export_failure(exc) from exc
    return export_s + time.perf_counter() - t0


def session(path: Path, spec: DeploySpec):
    """An InferenceSession as like for like asks: the cell's threads, inter-op 1, sequential."""
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if spec.device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
        wanted = [("CUDAExecutionProvider", {"device_id": spec.device.index or 0})]
    else:
        wanted = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), options, providers=wanted)
    first = wanted[0] if isinstance(wanted[0], str) else wanted[0][0]
    if sess.get_providers()[0] != first:
        raise BackendUnavailable(f"asked {first}, the session runs {', '.join(sess.get_providers())}",
                                 [FALLBACK_FLAG])
    return sess


def _deployed(sess, example: torch.Tensor, spec: DeploySpec, costs: DeployCosts) -> Deployed:
    """The timed step and the agreement's ``infer`` of a session."""
    name = sess.get_inputs()[0].name
    if spec.device.type == "cuda":  # the input stays on the device: IOBinding, outputs bound there too
        binding = sess.io_binding()
        resident = example.contiguous()
        binding.bind_input(name, "cuda", spec.device.index or 0, _numpy_dtype(resident), list(resident.shape),
                           resident.data_ptr())
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda", spec.device.index or 0)

        def step():
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
    else:
        feed = {name: example.detach().cpu().numpy()}

        def step():
            return sess.run(None, feed)

    def infer(x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.from_numpy(o) for o in sess.run(None, {name: x.detach().cpu().numpy()})]

    return Deployed(step, infer, costs)


def _numpy_dtype(x: torch.Tensor):
    import numpy as np

    return {torch.float32: np.float32, torch.float16: np.float16}[x.dtype]


def _settings(sess) -> dict:
    options = sess.get_session_options()
    return {"intra_op_num_threads": options.intra_op_num_threads, "inter_op_num_threads": options.inter_op_num_threads,
            "execution_mode": str(options.execution_mode).rsplit(".", 1)[-1],
            "graph_optimization_level": str(options.graph_optimization_level).rsplit(".", 1)[-1]}


@register_backend
class OnnxRuntime(Backend):
    name = "onnxruntime"

    def export(self, model: nn.Module, example: torch.Tensor, spec: DeploySpec) -> Exported:
        _ort()  # not installed: said before the export is paid for
        path = spec.workdir / "model.onnx"
        return Exported(path, write_onnx(model, example, path))

    def build(self, exported: Exported, example: torch.Tensor, spec: DeploySpec) -> Deployed:
        ort = _ort()
        t0 = time.perf_counter()
        sess = session(exported.artifact, spec)
        costs = DeployCosts("onnxruntime", ort.__version__, exported.seconds, time.perf_counter() - t0,
                            size_of(exported.artifact), sess.get_providers(), _settings(sess))
        return _deployed(sess, example, spec, costs)


class _Calibration:
    """ORT's CalibrationDataReader over the caller's images, one static-shape batch at a time."""

    def __init__(self, name: str, batches: list[torch.Tensor]):
        self._batches = iter([{name: b.detach().cpu().numpy()} for b in batches])

    def get_next(self):
        return next(self._batches, None)


@register_backend
class OnnxRuntimeInt8(OnnxRuntime):
    name = "onnxruntime-int8"
    int8 = True

    def export(self, model: nn.Module, example: torch.Tensor, spec: DeploySpec) -> Exported:
        if spec.device.type != "cpu":
            raise BackendUnavailable("onnxruntime-int8 is CPU post-training quantization; run it with --device cpu")
        return super().export(model, example, spec)

    def build(self, exported: Exported, example: torch.Tensor, spec: DeploySpec) -> Deployed:
        ort = _ort()
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        fp32, export_s = exported.artifact, exported.seconds
        prepared, int8 = spec.workdir / "model.pre.onnx", spec.workdir / "model.int8.onnx"
        t0 = time.perf_counter()
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # shapes and folding, as ORT advises
        name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        reader = type("Reader", (_Calibration, CalibrationDataReader), {})(name, spec.calibration)
        quantize_static(str(prepared), str(int8), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        sess = session(int8, spec)
        images = sum(int(b.shape[0]) for b in spec.calibration)
        costs = DeployCosts("onnxruntime", ort.__version__, export_s, time.perf_counter() - t0, size_of(int8),
                            sess.get_providers(), _settings(sess),
                            {"images": images, "batches": len(spec.calibration), "method": CALIBRATION,
                             "tool": "onnxruntime.quantization.quantize_static"})
        return _deployed(sess, example, spec, costs)
