"""One cell's result, typed: what each tracker returned, held as it returned it, and turned into
the JSON record in one place (``to_record``). The sweep checks that record against the schema and
appends it to the run directory; nothing else builds a cell's record.

A measurement fills the result as it goes (``result.latency = ...``), so a cell that fails half-way
keeps what it measured, and its flags are the union of its parts' (each part says its own).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.deploy.base import DeployCosts
from bench.measure.compiling import Compile
from bench.measure.flops import Flops
from bench.measure.memory import Energy, Memory
from bench.measure.setup import SETUP_TIMEOUT_FLAG, SetupClock
from bench.measure.timing import Latency, Throughput
from bench.scenarios.numerics import NumericsCheck

FLOPS_FAILED_FLAG = "flops-failed"


@dataclass
class BatchSearch:
    """``--batch auto``: each trial (batch, fits, peak MB) and the largest batch that ran one step
    (0: not even batch 1). Without ``--time-auto-batch`` the found batch is not timed: that frontier
    is the cell's result, its peak the largest fitting trial's."""

    tried: list[dict]
    found: int
    timed: bool

    @property
    def flags(self) -> list[str]:
        if self.found == 0:
            return ["batch-1-oom"]
        return [] if self.timed else ["frontier-only"]

    def to_record(self, world_size: int) -> dict:
        rec: dict[str, Any] = {"batch_search": self.tried}
        if self.found == 0:
            return rec | {"batch": None}
        if not self.timed:
            trial = next(t for t in reversed(self.tried) if t["batch"] == self.found)
            rec |= {"batch": self.found, "global_batch": self.found * world_size,
                    "peak_mem_mb": trial["peak_mem_mb"], "peak_mem_method": "largest fitting trial"}
        return rec


@dataclass
class CommFigures:
    """``--comm-steps``: bench.measure.comms' record fields and flags (the same on every rank)."""

    fields: dict[str, Any]
    flags: list[str]


@dataclass
class CellResult:
    """A ``bench run`` cell: its settings (the base record: the cell, where it ran, how it was set
    up), the FLOP count, and each tracker's typed result; ``None`` is "not measured"."""

    settings: dict[str, Any]
    world_size: int = 1
    status: str = "ok"  # ok | oom | error
    error: str | None = None
    loadavg_1m: float | None = None
    flops: Flops | None = None
    flops_failed: bool = False
    shape: dict[str, Any] = field(default_factory=dict)  # the task's input_hw and bn_mode
    batch_search: BatchSearch | None = None
    batch: int | None = None  # the batch timed (``--batch auto`` resolved)
    setup: SetupClock | None = None
    setup_timed_out: bool = False
    memory: Memory | None = None
    energy: Energy | None = None
    compile: Compile | None = None
    latency: Latency | None = None
    throughput: Throughput | None = None
    parts: Any = None  # a dense task's part latencies (bench.tasks.dense.PartLatency)
    engine_fields: dict[str, Any] | None = None  # what the training engine adds (its effective configuration)
    comms: CommFigures | None = None
    profile: dict[str, Any] | None = None  # op_breakdown, trace_file (--profile)
    numerics: NumericsCheck | None = None
    deploy: DeployCosts | None = None  # --backend of bench.deploy: export, build, artifact, runtime
    deploy_flags: list[str] = field(default_factory=list)  # the runtime's own (provider-fallback, ...)
    export_error_op: str | None = None  # status export-failed: the op or model line the exporter refused
    wall_s: float | None = None
    cpu_time_s: float | None = None
    derived: dict[str, Any] = field(default_factory=dict)  # MFU, the peak it is against, scaling (measure.derived)
    derived_flags: list[str] = field(default_factory=list)

    def failed(self, status: str, error: str) -> None:
        self.status, self.error = status, error

    @property
    def flags(self) -> list[str]:
        """Every part's flags of doubt, in the order the cell raised them."""
        flags = list(self.batch_search.flags) if self.batch_search else []
        flags += self.compile.flags if self.compile else []
        flags += self.latency.flags if self.latency else []
        flags += self.comms.flags if self.comms else []
        flags += self.deploy_flags
        flags += self.numerics.flags if self.numerics else []
        flags += [SETUP_TIMEOUT_FLAG] if self.setup_timed_out else []
        flags += [FLOPS_FAILED_FLAG] if self.flops_failed else (self.flops.flags if self.flops else [])
        return flags + self.derived_flags

    def to_record(self) -> dict[str, Any]:
        """The cell's JSON record: the one place a result becomes its fields."""
        rec = dict(self.settings)
        if self.flops is not None:
            rec |= self.flops.to_record()
        rec |= self.shape | {"status": self.status, "error": self.error, "loadavg_1m": self.loadavg_1m}
        if self.batch_search is not None:
            rec |= self.batch_search.to_record(self.world_size)
        if self.batch is not None:
            rec["batch"] = self.batch
        for part in (self.setup, self.memory, self.energy, self.compile, self.latency, self.throughput, self.parts):
            if part is not None:
                rec |= part.to_record()
        rec |= self.engine_fields or {}
        rec |= self.deploy.to_record() if self.deploy else {}
        if self.export_error_op is not None:
            rec["export_error_op"] = self.export_error_op
        rec |= self.comms.fields if self.comms else {}
        rec |= self.profile or {}
        rec |= self.numerics.to_record() if self.numerics else {}
        rec["flags"] = self.flags
        for name in ("wall_s", "cpu_time_s"):
            if getattr(self, name) is not None:
                rec[name] = getattr(self, name)
        return rec | self.derived
