"""Peak memory of one cell.

GPU: ``torch.cuda.max_memory_allocated`` after a reset (weights included).
Either way the window's peak is that of the steady steps: the first step of an eager cell (cuDNN's
autotuning workspace with benchmark mode on, first-use allocations) is kept apart as
``first_step_peak_mem_mb`` and the peak is reset after it, as a compiled cell's is after its compile
(``compile_peak_mem_mb``), so eager and compiled cells' ``peak_mem_mb`` cover the same steps.
CPU: the kernel's peak-RSS counter (VmHWM) reset at the start of the cell by writing 5 to
``/proc/self/clear_refs`` (Linux >= 4.0); peak = growth of RSS over the start of the cell plus the
bytes of the model's parameters and buffers, so the figure includes the weights like the GPU one.
Importing torch and timm alone costs ~0.9 GB of RSS, hence growth rather than absolute RSS.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``t``: a sharded DTensor's local shard (FSDP2's parameters, gradients
    and optimizer state), else ``t``. A DTensor's own ``numel`` is the global one and its
    ``data_ptr`` is 0, so bytes and identities are read from the shard."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def model_bytes(model: nn.Module) -> int:
    """Bytes this rank holds of the model's parameters and buffers (its shards under FSDP2)."""
    return sum(local(t).numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


@dataclass
class Memory:
    """The memory tracker's result: the peak of the window (how it was read), the allocator's
    reserved peak and NVML's device-level use (GPU only), and a training step's breakdown."""

    peak_mb: float
    method: str
    reserved_mb: float | None = None
    device_used_mb: float | None = None
    breakdown_mb: dict[str, float] | None = None
    compile_peak_mb: float | None = None  # the peak up to the end of the compile (``--compile``), kept apart
    first_step_peak_mb: float | None = None  # an eager cell: the peak up to the end of its first step, kept apart
    per_rank_peak_mb: list[float | None] | None = None  # every rank's peak (``over_ranks``); None: one process

    def over_ranks(self, per_rank_peak_mb: list[float | None]) -> "Memory":
        """The same window with every rank's peak kept: the cell's peak is the largest rank's."""
        return replace(self, per_rank_peak_mb=list(per_rank_peak_mb))

    @property
    def cell_peak_mb(self) -> float | None:
        """This rank's peak, or the largest rank's once ``over_ranks`` has them (rounded as recorded)."""
        if self.per_rank_peak_mb is None:
            return round(self.peak_mb, 1)
        known = [v for v in self.per_rank_peak_mb if v is not None]
        return max(known) if known else None

    def to_record(self) -> dict:
        rec = {"peak_mem_mb": self.cell_peak_mb, "peak_mem_method": self.method,
               "mem_reserved_mb": self.reserved_mb, "device_mem_used_mb": self.device_used_mb}
        if self.per_rank_peak_mb is not None:
            rec["per_rank_peak_mem_mb"] = self.per_rank_peak_mb
        if self.compile_peak_mb is not None:
            rec["compile_peak_mem_mb"] = round(self.compile_peak_mb, 1)
        if self.first_step_peak_mb is not None:
            rec["first_step_peak_mem_mb"] = round(self.first_step_peak_mb, 1)
        if self.breakdown_mb is not None:  # training cells only
            rec["mem_breakdown_mb"] = self.breakdown_mb
        return rec


@dataclass
class Energy:
    """The energy counter's result: joules over the window (None without NVML's counter, e.g. on
    CPU) spread over the images the window processed."""

    joules: float | None
    images: int

    def to_record(self) -> dict:
        if self.joules is None:
            return {}
        return {"energy_j_per_image": self.joules / max(1, self.images)}


class PeakMemory:
    """``with PeakMemory(device, model) as mem: ...`` then ``mem.peak_mb`` or ``mem.result()``."""

    def __init__(self, device: torch.device, model: nn.Module):
        self.device = device
        self.model = model
        self.peak_mb: float | None = None
        self.reserved_mb: float | None = None
        self.compile_peak_mb: float | None = None
        self.first_step_peak_mb: float | None = None
        self.method = "cuda.max_memory_allocated" if device.type == "cuda" else "rss_growth+weights"

    def __enter__(self) -> "PeakMemory":
        free_memory(self.device)
        self._reset_peak()
        if self.device.type != "cuda":
            self._rss_start_kb = _status_kb("VmRSS")
        return self

    def _reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            self.method = "rss_growth+weights (VmHWM not resettable: includes earlier peaks)"

    def _peak_so_far(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        growth_kb = max(0, _status_kb("VmHWM") - self._rss_start_kb)
        return growth_kb / 1024 + model_bytes(self.model) / 2**20

    def after_compile(self) -> None:
        """The compile ends here: its peak (graph capture, autotuning) is kept apart as
        ``compile_peak_mb`` and the window's peak starts again from what is resident now (the
        weights, the engine's state, the compiled code), still measured from the window's start."""
        self.compile_peak_mb = self._peak_so_far()
        self._reset_peak()

    def after_first_step(self) -> None:
        """An eager cell's untimed first step ends here: its peak (cuDNN's autotuning workspace on
        CUDA, first-use allocations) is kept apart as ``first_step_peak_mb`` and the window starts
        again from what is resident (weights, optimizer state), like ``after_compile``."""
        self.first_step_peak_mb = self._peak_so_far()
        self._reset_peak()

    def __exit__(self, *exc) -> None:
        self.peak_mb = self._peak_so_far()
        if self.device.type == "cuda":
            self.reserved_mb = torch.cuda.max_memory_reserved(self.device) / 2**20

    def result(self, counters: "DeviceCounters | None" = None,
               breakdown_mb: dict[str, float] | None = None) -> Memory:
        """The closed window as a ``Memory`` (with the device-level use ``counters`` read)."""
        return Memory(peak_mb=self.peak_mb, method=self.method, reserved_mb=self.reserved_mb,
                      device_used_mb=counters.used_mb if counters is not None else None, breakdown_mb=breakdown_mb,
                      compile_peak_mb=self.compile_peak_mb, first_step_peak_mb=self.first_step_peak_mb)


def warm_up(model: nn.Module, run: Callable[[], torch.Tensor | None], train: bool,
            make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None) -> None:
    """CPU: run the cell's own computation once before its window opens (``run``: the forward,
    returning the loss when ``train``; backward is run here) and, given ``make_optimizer`` (the
    engine's), one step of that optimizer on a throwaway layer. The first run of an op kind
    allocates process-wide state that stays resident (oneDNN primitives and scratchpads, MKL and
    OpenMP buffers, the optimizer's lazily imported code: ~4 MB for a first AdamW step); without
    this it lands in whichever cell first needs it and the RSS growth depends on the cell order.
    Leaves the model as it was: gradients dropped, buffers (BatchNorm's statistics) restored."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        if make_optimizer is not None:
            throwaway = nn.Linear(2, 2)
            throwaway(torch.ones(1, 2)).sum().backward()
            make_optimizer(throwaway).step()
        if train:
            run().float().sum().backward()
        else:
            with torch.inference_mode():
                run()
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for prm in model.parameters():
            prm.grad = None
        del buffers
        free_memory(torch.device("cpu"))


def _malloc_trim():
    libc_name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(libc_name).malloc_trim if libc_name else None
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def freeze_startup_objects() -> None:
    """Once per process, before the first cell builds anything: collect, then move every live
    object (the imported modules, classes and registries of torch, timm and torchvision: ~400k)
    into the permanent generation, so the ``gc.collect()`` of ``free_memory`` (four per cell)
    walks only what the cells made: 0.2 s to 0.2 ms each on the 2-core CPU. Nothing a cell builds
    is frozen, so a cell's cyclic garbage is still collected between cells."""
    gc.collect()
    gc.freeze()


def free_memory(device: torch.device) -> None:
    """Between cells: drop garbage and cached blocks so one cell's memory doesn't count in the next.

    On CPU, glibc keeps freed heap pages resident; a later cell reusing them would not grow RSS
    and its peak would read low. ``malloc_trim(0)`` hands them back to the kernel first."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


_COMMUNICATION = ("nccl", "gloo", "c10d", "processgroup", "collective", "cudaipc")


def is_oom(exc: BaseException) -> bool:
    """A cell's own allocation failed (skippable: record ``oom``). A communication library's
    "out of memory" (NCCL buffers, a dead peer) is not: it ends the job like any error."""
    text = str(exc).lower()
    if any(word in text for word in _COMMUNICATION) or type(exc).__name__ in ("DistBackendError", "DistNetworkError"):
        return False
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return text.startswith(("out of memory", "can't allocate memory")) or "cuda out of memory" in text \
        or "defaultcpuallocator: can't allocate memory" in text


def _tensor_bytes(tensors) -> int:
    """Bytes of the distinct tensors among ``tensors`` (the same tensor twice counts once). A
    view counts its own elements, not its whole buffer: DeepSpeed's gradients are views into
    reduce buckets sized for the largest layer group, most of which no gradient occupies."""
    seen, total = set(), 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        t = local(t)
        key = (t.data_ptr(), t.numel(), t.device)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def resident_bytes(tensors) -> int:
    """Bytes of storage the tensors cover, each byte once: views of one buffer (DeepSpeed's
    gradients are views of its partition) count once, and the part of a buffer no tensor covers
    (a reduce bucket sized for the largest layer group) does not count."""
    spans: dict[tuple, list[tuple[int, int]]] = {}
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta" or t.numel() == 0:
            continue
        t = local(t)
        size = t.element_size()
        start = t.storage_offset() * size
        extent = (1 + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))) * size
        spans.setdefault((t.untyped_storage().data_ptr(), t.device), []).append((start, start + extent))
    total = 0
    for ranges in spans.values():
        end = -1
        for lo, hi in sorted(ranges):
            if hi > end:
                total += hi - max(lo, end)
                end = hi
    return total


def _weight_cast(t: torch.Tensor) -> bool:
    """Whether ``t`` (or the tensor it is a view of) is a cast of a parameter: autocast's cached
    copy of a weight (``ToCopyBackward0`` straight from the parameter's AccumulateGrad)."""
    base = t._base if t._is_view() and t._base is not None else t
    fn = base.grad_fn
    if fn is None or type(fn).__name__ != "ToCopyBackward0":
        return False
    return any(isinstance(getattr(nxt, "variable", None), nn.Parameter) for nxt, _ in fn.next_functions)


def _param_tensors(module: nn.Module) -> list[torch.Tensor]:
    """What this rank holds of the parameters at rest: the DTensor shard under FSDP2, the
    partition (``ds_tensor``) under ZeRO-3, whose ``p`` itself is empty between gathers."""
    return [p.ds_tensor if isinstance(getattr(p, "ds_tensor", None), torch.Tensor) else p
            for p in module.parameters()]


@dataclass
class _Saved:
    """Tensors autograd saved for backward during one step, sorted by what they are."""

    activations: list[torch.Tensor]
    weight_casts: list[torch.Tensor]
    gathered: list[torch.Tensor]


def _saving_hooks(module: nn.Module, own: set[int], saved: _Saved):
    def pack(t):
        if t.data_ptr() in own:  # a resident weight: counted in params
            return t
        if t.data_ptr() in _param_ptrs(module):  # FSDP2/ZeRO-3: a block's gathered weight, registered only now
            # detached: ZeRO-3 saves the parameter itself, whose data is swapped for an empty
            # tensor when it is released; the alias keeps the gathered storage to be counted.
            saved.gathered.append(t.detach())
        elif _weight_cast(t):
            saved.weight_casts.append(t)
        else:
            saved.activations.append(t)
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


def memory_breakdown(trainer, step) -> dict[str, float | None]:
    """Where a training step's memory goes, each part from the engine's real tensors (MB):

    - ``params``: what this rank holds of the parameters at rest and the buffers;
    - ``gathered_params``: weights gathered from other ranks that autograd keeps for backward
      (FSDP2, ZeRO-3), 0 where every rank holds whole weights;
    - ``autocast_weight_copies``: the low-precision copies of the weights autocast makes (its cast
      cache) and autograd keeps for backward; not activations, they do not grow with the batch;
    - ``optimizer``: every tensor in the optimizer's state (AdamW: exp_avg, exp_avg_sq; under
      ZeRO-1/2 the inner optimizer holds only this rank's partition);
    - ``master_weights``: parameters the optimizer steps that are not the model's (DeepSpeed's
      fp32 partitions), 0 where it steps the model's own;
    - ``grads``: the gradients held once backward is done, read when the engine calls
      ``trainer.after_backward`` (``p.grad`` and the engine's own buffers, each byte once): under
      ZeRO-2 this rank's partition, not every gradient backward produced on the way; None where
      the engine never calls it;
    - ``activations``: the rest of what autograd saves for backward in one forward.
    Each is measured on its own; none is defined as the peak minus the rest. Sharded tensors
    (FSDP2's DTensors) count this rank's shard only, so every part is per rank.
    """
    module = trainer.module
    model_params = _param_tensors(module) + list(module.buffers())
    own = _param_ptrs(module)
    optimizer = getattr(trainer, "optimizer", None)
    state_tensors, stepped = [], []
    if optimizer is not None:
        for state in optimizer.state.values():
            state_tensors += [v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
        for group in optimizer.param_groups:
            stepped += [p for p in group["params"] if local(p).data_ptr() not in own]
    held: list[list[torch.Tensor]] = []

    def read_grads():
        held.append(trainer.held_grads())

    saved = _Saved([], [], [])
    trainer.after_backward.append(read_grads)
    try:
        with _saving_hooks(module, own, saved):
            step()
    finally:
        trainer.after_backward.remove(read_grads)
    mb = 2**20
    return {
        "params": round(_tensor_bytes(model_params) / mb, 3),
        "gathered_params": round(resident_bytes(saved.gathered) / mb, 3),
        "grads": round(resident_bytes(held[-1]) / mb, 3) if held else None,
        "optimizer": round(_tensor_bytes(state_tensors) / mb, 3),
        "master_weights": round(_tensor_bytes(stepped) / mb, 3),
        "autocast_weight_copies": round(resident_bytes(saved.weight_casts) / mb, 3),
        "activations": round(_tensor_bytes(saved.activations) / mb, 3),
    }


def _param_ptrs(module: nn.Module) -> set[int]:
    return {local(p).data_ptr() for p in module.parameters()}


def nvml_handle(pynvml, device: torch.device):
    """NVML's handle of the GPU torch calls ``device``, found by its UUID. NVML numbers every GPU
    of the machine, CUDA only the visible ones (CUDA_VISIBLE_DEVICES: SLURM, masked torchrun
    jobs), so the same index can name two different GPUs. Raises where NVML knows no such GPU."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = str(torch.cuda.get_device_properties(index).uuid)
    names = [uuid] if uuid.startswith(("GPU-", "MIG-")) else [f"GPU-{uuid}", f"MIG-{uuid}"]
    for name in names[:-1]:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(name)
        except Exception:  # noqa: BLE001 - NVMLError_NotFound: try the MIG form
            pass
    return pynvml.nvmlDeviceGetHandleByUUID(names[-1])


class DeviceCounters:
    """GPU only, through NVML (nvidia-ml-py): the device-level memory in use at the end of the
    window (everything on the GPU, the CUDA context and other processes included, unlike the
    allocator's figures) and the energy counter's difference over the window. Inert on CPU and
    where NVML or the counter is missing (older GPUs have no energy counter)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.handle = None
        self.energy_mj: float | None = None
        self.used_mb: float | None = None

    def __enter__(self) -> "DeviceCounters":
        if self.device.type != "cuda":
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = nvml_handle(pynvml, self.device)
            self._energy0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except Exception:  # noqa: BLE001 - no NVML, no counter: the fields stay None
            self.handle = None
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is None:
            return
        import pynvml

        try:
            torch.cuda.synchronize(self.device)
            self.energy_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - self._energy0
            self.used_mb = pynvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20
        except Exception:  # noqa: BLE001
            pass

    def energy(self, images: int) -> Energy:
        """The window's energy as an ``Energy`` over ``images`` images."""
        return Energy(joules=None if self.energy_mj is None else self.energy_mj / 1e3, images=images)
