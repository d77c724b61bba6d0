"""Cells: the units a sweep measures, one per model x resolution x mode x batch (x task).

``Cell.key`` names the cell across runs ("task|model|res|mode|batch"); together with the
configuration's identity hash (bench.config.identity_id) it decides what resume skips.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Cell:
    model: str
    height: int
    width: int
    mode: str  # "infer" | "train" for bench run; the task ("det" | "seg") for a fine-tune
    batch: int | str  # an int, or "auto" (largest batch that fits)
    task: str = "cls"

    @property
    def res(self) -> str:
        return str(self.height) if self.height == self.width else f"{self.height}x{self.width}"

    @property
    def key(self) -> str:
        return f"{self.task}|{self.model}|{self.res}|{self.mode}|{self.batch}"

    @property
    def train(self) -> bool:
        return self.mode != "infer"

    def as_dict(self) -> dict:
        return {"model": self.model, "height": self.height, "width": self.width, "mode": self.mode,
                "batch": self.batch, "task": self.task, "res": self.res}


def make_cells(models: Iterable[str], resolutions: Iterable[tuple[int, int]], modes: Iterable[str],
               batches: Iterable[int | str], task: str = "cls") -> list[Cell]:
    """Cells in the order they run (model-major, so one model is built once per resolution);
    a cell asked for twice (``--modes infer,infer``) appears once."""
    cells = [Cell(m, h, w, mode, b, task) for m in models for (h, w) in resolutions for mode in modes for b in batches]
    return list(dict.fromkeys(cells))
