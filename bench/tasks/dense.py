"""What det and seg share: a backbone under a dense head (models.heads), costed as the PVT paper
costs it (parts backbone / neck / head, each counted from its own modules), backbone BatchNorm
frozen, and the inference latency per part timed in a pass of its own after the main timing so
that no extra clock read sits inside the timed step."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn as nn

from bench.measure.flops import Flops, count_flops
from bench.plan import Cell
from bench.tasks.base import Task, sync


class DenseTask(Task):
    bn_mode = "frozen"
    #: the fine-tune's default head normalisation as recorded (None: ``--head-norm`` as given)
    recorded_head_norm: str | None = None

    def build(self, cell: Cell) -> nn.Module:
        from models.heads import build_dense

        return build_dense(self.name, cell.model, self.input_hw(cell))

    def count(self, cell: Cell) -> Flops:
        from models.heads import BACKBONE_ROOT, DENSE_PARTS, cost_view

        h, w = self.input_hw(cell)
        # cross-checked: the scenario counts once per model and size, outside timing
        report = count_flops(cost_view(self.name, self.build(cell)), cell.model, h, w, cross_check=True,
                             parts=DENSE_PARTS[self.name], task=self.name, stage_root=BACKBONE_ROOT[self.name])
        report.res = cell.res
        return report

    def _parts_pass(self, model: nn.Module, x: torch.Tensor, timed: Callable) -> None:
        """One forward through the parts, each call wrapped by ``timed(name, fn, *args)``."""
        raise NotImplementedError

    @torch.inference_mode()
    def part_latency_ms(self, model: nn.Module, x: torch.Tensor, iters: int = 5) -> dict[str, float]:
        """Median milliseconds per part over ``iters`` passes (after one untimed pass), each part
        bracketed by a host clock (synchronised on GPU)."""
        model.eval()
        samples: dict[str, list[float]] = {}

        def timed(name, fn, *args):
            sync(x.device)
            t0 = time.perf_counter()
            out = fn(*args)
            sync(x.device)
            samples.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
            return out

        for i in range(iters + 1):
            self._parts_pass(model, x, timed)
            if i == 0:  # the first pass warms caches and allocators
                samples.clear()
        return {name: round(statistics.median(v), 3) for name, v in samples.items()}

    # ---- bench finetune
    def finetune_model(self, backbone: nn.Module, num_classes: int, image_size: tuple[int, int],
                       fpn_channels: int, head_norm: str) -> nn.Module:
        raise NotImplementedError

    def backbone_of(self, model: nn.Module) -> nn.Module:
        return model.backbone

    def batch_loss(self, model: nn.Module, batch: dict, device: torch.device, input_dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def scorer(self, num_classes: int):
        """An accumulator: ``add(module, images, data)`` per eval batch, ``result(ctx)`` at the end."""
        raise NotImplementedError

    def metric_fields(self, before: dict, after: dict) -> dict:
        """The record's scores after training, and before it (untrained)."""
        raise NotImplementedError
