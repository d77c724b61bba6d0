"""``--data`` parsed without loading a data set: kept apart from the loaders (torch, PIL) so a
command can check it, and refuse it, before importing them."""
from __future__ import annotations

from bench.errors import BadInput


def parse_data_spec(spec: str, task: str) -> tuple[str, str]:
    """``--data`` -> (kind, directory); checked before anything starts."""
    kind, _, where = spec.partition(":")
    if not ((kind == "synthetic" and not where) or (kind in ("coco", "ade20k") and where)):
        raise BadInput(f"bad --data '{spec}': give synthetic, coco:DIR or ade20k:DIR")
    if kind == "ade20k" and task == "det":
        raise BadInput("ade20k data has label maps but no boxes: use it with --task seg")
    return kind, where
