"""The interface every task adapter implements (bench.tasks.cls, det, seg)."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from bench.measure.flops import Flops
from bench.plan import Cell


class Task:
    """One kind of cell. ``bench run`` uses build / count / input / infer_step / train_targets /
    loss / part_latency_ms; ``bench finetune`` the dense tasks' fine-tune half (det, seg)."""

    name = ""
    #: how the backbone's BatchNorm runs in ``bench run`` cells (dense models freeze it); None: not recorded
    bn_mode: str | None = None

    def input_hw(self, cell: Cell) -> tuple[int, int]:
        """The size fed to the model (a detector pads it)."""
        return cell.height, cell.width

    def build(self, cell: Cell) -> nn.Module:
        raise NotImplementedError

    def count(self, cell: Cell) -> Flops:
        """Params and FLOPs of the cell's model at its input size (no cross-check: that is
        ``bench flops``'s job)."""
        raise NotImplementedError

    def _noise(self, *shape: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Normalised noise: what a classifier's preprocessing would hand it."""
        return torch.randn(*shape, device=device, dtype=dtype)

    def input(self, cell: Cell, batch: int, device: torch.device, dtype: torch.dtype,
              channels_last: bool) -> torch.Tensor:
        height, width = self.input_hw(cell)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return self._noise(batch, 3, height, width, device=device, dtype=dtype).contiguous(memory_format=memory_format)

    def feed(self, x: torch.Tensor) -> Any:
        """What the model's forward takes for the batch ``x`` (a detector: a list of images)."""
        return x

    def infer_step(self, model: nn.Module, x: torch.Tensor, amp: torch.dtype | None) -> Callable[[], Any]:
        """One inference iteration on ``x`` (autocast to ``amp`` if given); nothing else inside."""
        model.eval()
        images = self.feed(x)
        device_type = x.device.type

        @torch.inference_mode()
        def step():
            if amp is None:
                return model(images)
            with torch.autocast(device_type, dtype=amp):
                return model(images)

        return step

    def train_targets(self, x: torch.Tensor) -> Any:
        """Fixed synthetic targets for the batch ``x``, so every step does the same work."""
        raise NotImplementedError

    def loss(self, forward: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        raise NotImplementedError

    def part_latency_ms(self, model: nn.Module, x: torch.Tensor, setup: Any = None) -> Any:
        """Inference latency per part, timed in a pass of its own under ``setup`` (a
        bench.tasks.dense.PartsSetup), as a result with ``to_record()`` (None: the model has no parts)."""
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
