"""What det and seg share: a backbone under a dense head (models.heads), costed as the PVT paper
costs it (parts backbone / neck / head, each counted from its own modules), backbone BatchNorm
frozen, and the inference latency per part timed in a pass of its own after the main timing so
that no extra clock read sits inside the timed step.

The parts pass runs under the cell's own set-up: the model as the cell placed it (weight dtype,
memory format), the cell's input, the cell's autocast dtype; each part is timed by the protocol of
bench.measure.timing (warm-up, then samples with the order-statistic CI of the median), on a small
share of the cell's budget. Parts are not compiled: under ``--compile`` only the whole step is, and
compiling backbone, neck and head apart would cost a second compile per cell (``part_latency_setup``
says so in the record)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from bench.measure.flops import Flops, count_flops
from bench.measure.timing import Latency, measure
from bench.plan import Cell
from bench.tasks.base import Task, sync

#: share of the cell's --budget (and of its --max-time, as the cap) that the parts pass may use, all parts together
PARTS_BUDGET_SHARE = 0.25
#: timed iterations per part: the smallest n with a 95% CI of the median (the budget may not stretch it)
PARTS_MIN_ITERS = 6
#: a part's cap is at least this many times its first (untimed) call, so that a short --max-time still leaves
#: it room for samples (the protocol may spend half a cap warming up): as long as the old pass's 6 passes
PARTS_CAP_FLOOR = 6


@dataclass(frozen=True)
class PartsSetup:
    """The cell's set-up the parts are timed under. The weight dtype and memory format come with
    the model and the input the cell built; ``amp`` is its autocast dtype (None: none);
    ``budget_s`` / ``max_time_s`` are the cell's own (the pass takes ``PARTS_BUDGET_SHARE`` of them);
    ``channels_last`` as the cell; ``compiled``: the whole step was compiled (the parts are not);
    ``data``: ``--data`` as given."""

    amp: torch.dtype | None = None
    budget_s: float = 2.0
    max_time_s: float = 90.0
    channels_last: bool = False
    compiled: bool = False
    data: str = "synthetic"  # bench run --data: coco:DIR adds det's real-image FPS pass

    def label(self, model: nn.Module) -> str:
        """What the parts ran under, in words, for the record."""
        weights = str(next(model.parameters()).dtype).removeprefix("torch.")
        amp = f"autocast {str(self.amp).removeprefix('torch.')}" if self.amp is not None else "no autocast"
        layout = "channels_last" if self.channels_last else "contiguous"
        compiled = "eager parts (the whole step was compiled; the parts were not)" if self.compiled else "eager"
        return f"{amp}, weights {weights}, {layout}, {compiled}"


@dataclass
class PartLatency:
    """The parts pass: each part's timing under the protocol, the set-up it ran under, and the
    task's own facts of that pass (det: the NMS load)."""

    parts: dict[str, Latency]
    setup: str
    extra: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        """Per part: the median (None without a sample), its 95% CI (None below 6 samples) and the
        sample count, read from ``Latency.to_record`` as the cell's own latency is."""
        timed = {name: lat.to_record() for name, lat in self.parts.items()}
        median = {k: None if r["latency_ms"] is None else round(r["latency_ms"], 3) for k, r in timed.items()}
        ci95 = {k: None if r["latency_ci95_ms"] is None else [round(v, 3) for v in r["latency_ci95_ms"]]
                for k, r in timed.items()}
        return {"part_latency_ms": median, "part_latency_ci95_ms": ci95,
                "part_latency_iters": {k: r["iters"] for k, r in timed.items()},
                "part_latency_setup": self.setup, **self.extra}


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

    def _pass_facts(self, model: nn.Module, x: torch.Tensor, setup: PartsSetup) -> dict:
        """Record fields of the task's own passes after the main timing (none by default)."""
        return {}

    @torch.inference_mode()
    def part_latency_ms(self, model: nn.Module, x: torch.Tensor, setup: PartsSetup | None = None) -> PartLatency:
        """Each part timed on its own by ``measure`` under the cell's autocast, on the inputs one
        untimed pass through the parts gave it (so each part sees what it sees in the whole
        forward: the previous part's output, in its dtype)."""
        setup = setup or PartsSetup()
        model.eval()
        calls: list[tuple[str, Callable, tuple, float]] = []  # (part, fn, its inputs, its first call in s)

        def under_amp(fn, *args):
            if setup.amp is None:
                return fn(*args)
            with torch.autocast(x.device.type, dtype=setup.amp):
                return fn(*args)

        def collect(name, fn, *args):
            sync(x.device)
            t0 = time.perf_counter()
            out = under_amp(fn, *args)
            sync(x.device)
            calls.append((name, fn, args, time.perf_counter() - t0))
            return out

        under_amp(self._parts_pass, model, x, collect)
        share = PARTS_BUDGET_SHARE / max(1, len(calls))
        parts = {name: measure(lambda fn=fn, args=args: under_amp(fn, *args), x.device, budget_s=setup.budget_s * share,
                               max_time_s=max(setup.max_time_s * share, PARTS_CAP_FLOOR * first_s),
                               min_iters=PARTS_MIN_ITERS, min_time_s=0.0, min_warmup=1, warmup_block=1)
                 for name, fn, args, first_s in calls}
        return PartLatency(parts, setup.label(model), self._pass_facts(model, x, setup))

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
