"""Plan: turn validated command-line lists into cells (model x resolution x mode x batch).

Parsing lives here too, so every command (run, flops, finetune, slurm) rejects bad input with the
same one-line messages.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

from bench.errors import BadInput

MODES = ("infer", "train")


@dataclass(frozen=True)
class Cell:
    model: str
    height: int
    width: int
    mode: str  # "infer" | "train"
    batch: int | str  # an int, or "auto" (largest batch that fits)

    @property
    def res(self) -> str:
        return str(self.height) if self.height == self.width else f"{self.height}x{self.width}"

    @property
    def key(self) -> str:
        """Identifies the cell across runs and resumes."""
        return f"{self.model}|{self.res}|{self.mode}|{self.batch}"

    def as_dict(self) -> dict:
        return {**asdict(self), "res": self.res}


def parse_models(text: str) -> list[str]:
    from models import list_models

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BadInput("--models is empty; give a comma-separated list, e.g. pvt_small,vit_s,resnet50")
    known = list_models()
    for n in names:
        if n not in known:
            raise BadInput(f"unknown model '{n}'; known models: {', '.join(known)}")
    return list(dict.fromkeys(names))


def parse_resolutions(text: str) -> list[tuple[int, int]]:
    """'224,512x640' -> [(224, 224), (512, 640)]; each side a positive multiple of 32."""
    out: list[tuple[int, int]] = []
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise BadInput("--res is empty; give sizes like 224,512,800 or HxW like 512x640")
    for item in items:
        parts = item.lower().split("x")
        try:
            sides = [int(p) for p in parts]
        except ValueError:
            sides = []
        if len(sides) not in (1, 2) or any(s <= 0 or s % 32 for s in sides):
            raise BadInput(
                f"bad resolution '{item}': each side must be a positive multiple of 32 (e.g. 224, 512, 512x640)"
            )
        out.append((sides[0], sides[-1]))
    return list(dict.fromkeys(out))


def parse_batches(text: str, allow_auto: bool = True) -> list[int | str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    out: list[int | str] = []
    for item in items:
        if item == "auto" and allow_auto:
            out.append("auto")
            continue
        if not item.isdigit() or int(item) <= 0:
            hint = " or 'auto'" if allow_auto else ""
            raise BadInput(f"bad batch size '{item}': give positive integers{hint}, e.g. --batch 1,8")
        out.append(int(item))
    if not out:
        raise BadInput("--batch is empty; give positive integers, e.g. --batch 1,8")
    return list(dict.fromkeys(out))


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise BadInput(f"bad mode '{bad[0] if bad else text}'; choose from {', '.join(MODES)}")
    return modes


def make_cells(
    models: Iterable[str], resolutions: Iterable[tuple[int, int]], modes: Iterable[str], batches: Iterable[int | str]
) -> list[Cell]:
    """Cells in the order they run: model-major, so one model is built once per resolution."""
    return [
        Cell(m, h, w, mode, b)
        for m in models
        for (h, w) in resolutions
        for mode in modes
        for b in batches
    ]
