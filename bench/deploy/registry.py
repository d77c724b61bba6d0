"""The runtimes by name (one module each registers itself), and the backends ``--backend`` takes:
PyTorch's own two, run by bench.scenarios.step as ever, and the deployed ones registered here.

Names without imports: ``RUNTIME_MODULES`` says which module registers each runtime, so parsing
``--backend`` (every ``bench`` command builds its options) imports no runtime and not torch; the
module is imported when its runtime is first asked for (``backend_for``). A new runtime is its
module plus its line here (tests/unit/test_deploy_registry.py checks the two agree)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.deploy.base import Backend

#: PyTorch's own backends: the eager cell and the torch.compile cell (bench.scenarios.step)
PYTORCH_BACKENDS = ("eager", "compile")
#: Each deployed runtime's name and the module whose @register_backend registers it.
RUNTIME_MODULES = {
    "aoti": "bench.deploy.aoti",
    "onnxruntime": "bench.deploy.onnxruntime",
    "onnxruntime-int8": "bench.deploy.onnxruntime",
    "openvino": "bench.deploy.openvino",
    "tensorrt": "bench.deploy.tensorrt",
}
_REGISTRY: dict[str, "Backend"] = {}


def register_backend(cls: type["Backend"]) -> type["Backend"]:
    _REGISTRY[cls.name] = cls()
    return cls


def backend_names() -> list[str]:
    """Every name ``--backend`` takes, PyTorch's first."""
    return [*PYTORCH_BACKENDS, *RUNTIME_MODULES]


def deployed(name: str) -> bool:
    """A runtime of this package (not PyTorch's eager or compile)."""
    return name in RUNTIME_MODULES


def backend_for(name: str) -> "Backend":
    """The runtime ``name``, its module imported (and so registered) on first use."""
    if name not in _REGISTRY:
        importlib.import_module(RUNTIME_MODULES[name])
    return _REGISTRY[name]


def parse_backends(raw: object) -> list[str]:
    """``--backend eager,onnxruntime``: known names, each once, in the order given."""
    from bench.errors import BadInput

    items = raw if isinstance(raw, list) else str(raw or "").split(",")
    names = [str(n).strip() for n in items if str(n).strip()]
    known = backend_names()
    if not names:
        raise BadInput(f"--backend is empty; choose from {', '.join(known)}")
    for name in names:
        if name not in known:
            shown = "".join(c if c.isprintable() else "?" for c in name[:40])
            raise BadInput(f"unknown backend '{shown}'; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def validate_backends(cfg) -> None:
    """What a deployed backend refuses, before anything is created (one line, exit 2): training
    (a runtime deploys inference; INT8 has no training at all), a GPU-only runtime on a CPU run,
    and the settings that would make its cell unlike the eager one it is compared with."""
    from bench.errors import BadInput

    runtimes = [n for n in cfg.backends if deployed(n)]
    if not runtimes:
        return
    named = f"--backend {runtimes[0]}"
    if "train" in cfg.modes:
        what = "INT8 post-training quantization has no training step" if backend_for(runtimes[0]).int8 \
            else "a deployed runtime runs inference only"
        raise BadInput(f"{named} with --modes {','.join(cfg.modes)}: {what}; give --modes infer")
    gpu_only = [n for n in runtimes if backend_for(n).cuda_only]
    if gpu_only and not _cuda_run(cfg.device):
        raise BadInput(f"--backend {gpu_only[0]} needs a CUDA device; this run is on the CPU")
    refusals = [(cfg.compile, "--compile (give --backend compile for the torch.compile cell)"),
                (cfg.dtype != "fp32", f"--dtype {cfg.dtype} (deployed cells are fp32; INT8: onnxruntime-int8)"),
                (cfg.channels_last, "--channels-last"), ("auto" in cfg.batches, "--batch auto"),
                (cfg.nproc != [1], "--nproc above 1"), (cfg.task != "cls", f"--task {cfg.task} (cls only so far)"),
                (cfg.global_batch is not None, "--global-batch")]
    for refused, what in refusals:
        if refused:
            raise BadInput(f"{named} cannot be combined with {what}")


def _cuda_run(device: str) -> bool:
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()
