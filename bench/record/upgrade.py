"""Older records read as the current schema: every shim for them lives here."""
from __future__ import annotations

from typing import Any

# Schema v1 records have no config_id; one v1 run directory could hold the same cell under several
# engines, so these settings tell its configurations apart.
V1_CONFIGURATION = ("engine", "zero", "world_size", "dtype")


def upgrade(rec: dict[str, Any]) -> dict[str, Any]:
    """Read a record of any schema version as the current one. Every shim for older records lives
    here, so no reader needs a special case: v1 had no version, kind, task, precision or config_id."""
    rec = dict(rec)
    if rec.get("schema_version") is None:
        rec["schema_version"] = 1
        fine = rec.get("mode") in ("det", "seg")
        rec.setdefault("kind", "finetune" if fine else "run")
        rec.setdefault("task", rec.get("mode") if fine else "cls")
        dtype = rec.get("dtype")
        if dtype and not rec.get("precision"):
            # v1: plain/DDP autocast; DeepSpeed cast the whole model.
            half = dtype in ("bf16", "fp16")
            weights = rec.get("engine") == "deepspeed"
            rec["precision"] = (f"{dtype}-weights" if weights else f"amp-{dtype}") if half else dtype
        if rec.get("config_id") is None:  # its configuration stands in (an engines sweep in one directory)
            rec["config_id"] = "v1:" + "|".join(str(rec.get(k)) for k in V1_CONFIGURATION)
    if "nodes" not in rec and rec.get("world_size") == 1:
        # Before `nodes`: one rank ran on one node. A multi-rank record stays unknown (None): it may
        # have been 2 nodes x 1 rank as well as 1 node x 2, and a guess would misplace it in a study.
        rec["nodes"] = 1
    return rec
