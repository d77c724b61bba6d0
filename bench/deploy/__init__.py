"""Deployed backbones: the same model, weights and input under an inference runtime (one module per
runtime, registered by name in bench.deploy.registry). bench.scenarios.deployed times and checks
them; ``--backend`` (bench.config) takes their names beside PyTorch's eager and compile."""
from bench.deploy import aoti, onnxruntime, openvino, tensorrt  # noqa: F401 - each registers its runtime
from bench.deploy.base import BACKEND_UNAVAILABLE, EXPORT_FAILED, BackendUnavailable, Deployed, DeploySpec, ExportFailed
from bench.deploy.registry import PYTORCH_BACKENDS, backend_for, backend_names, deployed

__all__ = ["BACKEND_UNAVAILABLE", "EXPORT_FAILED", "PYTORCH_BACKENDS", "BackendUnavailable", "Deployed", "DeploySpec",
           "ExportFailed", "backend_for", "backend_names", "deployed"]
