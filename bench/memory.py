"""Peak memory of one cell.

GPU: ``torch.cuda.max_memory_allocated`` after a reset (weights included).
CPU: the kernel's peak-RSS counter (VmHWM) reset at the start of the cell by writing 5 to
``/proc/self/clear_refs`` (Linux >= 4.0); peak = growth of RSS over the start of the cell plus the
bytes of the model's parameters and buffers, so the figure includes the weights like the GPU one.
Importing torch and timm alone costs ~0.9 GB of RSS, hence growth rather than absolute RSS.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from pathlib import Path

import torch
import torch.nn as nn

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


class PeakMemory:
    """``with PeakMemory(device, model) as mem: ...`` then ``mem.peak_mb``."""

    def __init__(self, device: torch.device, model: nn.Module):
        self.device = device
        self.model = model
        self.peak_mb: float | None = None
        self.method = "cuda.max_memory_allocated" if device.type == "cuda" else "rss_growth+weights"

    def __enter__(self) -> "PeakMemory":
        free_memory(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                _CLEAR_REFS.write_text("5")
            except OSError:
                self.method = "rss_growth+weights (VmHWM not resettable: includes earlier peaks)"
            self._rss_start_kb = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            growth_kb = max(0, _status_kb("VmHWM") - self._rss_start_kb)
            self.peak_mb = growth_kb / 1024 + model_bytes(self.model) / 2**20


def _malloc_trim():
    libc_name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(libc_name).malloc_trim if libc_name else None
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def free_memory(device: torch.device) -> None:
    """Between cells: drop garbage and cached blocks so one cell's memory doesn't count in the next.

    On CPU, glibc keeps freed heap pages resident; a later cell reusing them would not grow RSS
    and its peak would read low. ``malloc_trim(0)`` hands them back to the kernel first."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc)
    return "out of memory" in text.lower() or "can't allocate memory" in text.lower()
