"""``--task det|seg`` for the callers that name a cell's size or cost by cell (``bench flops``):
both now come from the task's adapter (bench.tasks.det / bench.tasks.seg), where the detector,
the segmentor, their steps and their part latencies live."""
from __future__ import annotations

from bench.measure.flops import Flops
from bench.plan import Cell
from bench.tasks import task_for


def input_hw(cell: Cell) -> tuple[int, int]:
    """The size fed to the model: detectors pad each side to a multiple of 32 (mmdet's rule)."""
    return task_for(cell.task).input_hw(cell)


def count(cell: Cell) -> Flops:
    """Params and FLOPs of the cell's whole model, split into backbone / neck / head."""
    return task_for(cell.task).count(cell)
