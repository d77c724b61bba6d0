"""The interface every task adapter implements (bench.tasks.cls, det, seg)."""
from __future__ import annotations

from dataclasses import dataclass
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

    # ---- the numerics check (bench.scenarios.numerics)
    def agreement_taps(self, model: nn.Module) -> list[Tap]:
        """The modules whose outputs are compared with the reference's: the four stages (strides
        4-32), each at the last module its stage description names."""
        from models.features import STRIDES, stage_prefixes

        modules = dict(model.named_modules())
        taps = []
        for i, (stage, prefixes) in enumerate(list(stage_prefixes(model).items())[:len(STRIDES)]):
            module = modules[[p for p in prefixes if p in modules][-1]]
            while isinstance(module, nn.ModuleList):  # a ModuleList is never called: its last block is
                module = module[-1]
            taps.append(Tap(stage, module, STRIDES[i]))
        return taps

    def logits(self, output: Any) -> torch.Tensor | None:
        """The model's final output as one tensor (None: it has none, e.g. a detector's boxes)."""
        return output

    def task_agreement(self, cell_output: Any, reference_output: Any) -> dict | None:
        """The task's own decisions scored against the reference's taken as ground truth, with the
        one figure the tolerance bounds as ``score`` (None: the logits say it all)."""
        return None


@dataclass(frozen=True)
class Tap:
    """A module whose output the numerics check compares. A module that returns a list of four
    maps (a features-only backbone) counts as the four levels; one that returns a dict, as its
    entries."""

    name: str
    module: nn.Module
    stride: int | None = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
