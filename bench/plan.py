"""Cells: the units a sweep measures, one per model x resolution x mode x batch (x task x backend).

``Cell.key`` names the cell across runs ("task|model|res|mode|batch", then "|backend" for any
backend but eager, so the keys of runs made before backends existed are unchanged); together with
the configuration's identity hash (bench.config.identity_id) it decides what resume skips.
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
    backend: str = "eager"  # --backend: eager, compile, or a deployed runtime (bench.deploy)

    @property
    def res(self) -> str:
        return str(self.height) if self.height == self.width else f"{self.height}x{self.width}"

    @property
    def key(self) -> str:
        key = f"{self.task}|{self.model}|{self.res}|{self.mode}|{self.batch}"
        return key if self.backend == "eager" else f"{key}|{self.backend}"

    @property
    def train(self) -> bool:
        return self.mode != "infer"

    def as_dict(self) -> dict:
        return {"model": self.model, "height": self.height, "width": self.width, "mode": self.mode,
                "batch": self.batch, "task": self.task, "res": self.res}


def make_cells(models: Iterable[str], resolutions: Iterable[tuple[int, int]], modes: Iterable[str],
               batches: Iterable[int | str], task: str = "cls", backends: Iterable[str] = ("eager",)) -> list[Cell]:
    """Cells in the order they run (model-major, so one model is built once per resolution; the
    backends of one model x resolution x mode x batch side by side); a cell asked for twice
    (``--modes infer,infer``) appears once."""
    backends = list(backends)
    cells = [Cell(m, h, w, mode, b, task, backend) for m in models for (h, w) in resolutions for mode in modes
             for b in batches for backend in backends]
    return list(dict.fromkeys(cells))
