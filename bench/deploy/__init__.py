"""Deployed backbones: the same model, weights and input under an inference runtime (one module per
runtime, registered by name in bench.deploy.registry). bench.scenarios.deployed times and checks
them; ``--backend`` (bench.config) takes their names beside PyTorch's eager and compile.

Importing this package imports no runtime and not torch (``--backend`` is parsed by every command):
the names of bench.deploy.base below load it on first use, each runtime loads with its first cell."""
from bench.deploy.registry import PYTORCH_BACKENDS, RUNTIME_MODULES, backend_for, backend_names, deployed

_FROM_BASE = ("BACKEND_UNAVAILABLE", "EXPORT_FAILED", "BackendUnavailable", "Deployed", "DeploySpec", "ExportFailed")

__all__ = [*_FROM_BASE, "PYTORCH_BACKENDS", "RUNTIME_MODULES", "backend_for", "backend_names", "deployed"]


def __getattr__(name: str):
    if name in _FROM_BASE:
        from bench.deploy import base

        return getattr(base, name)
    raise AttributeError(f"module 'bench.deploy' has no attribute {name!r}")
