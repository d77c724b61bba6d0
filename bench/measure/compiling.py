"""``--compile``: the first call of a compiled step is the compile, timed apart (never in warm-up),
and graph breaks and recompiles are counted until the tracker closes (over the timed steps too)."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import torch


@dataclass
class Compile:
    """The compile tracker's result."""

    seconds: float
    graph_breaks: int
    recompiles: int
    flags_over_ranks: list[str] | None = None  # any rank's flags (``over_ranks``); None: this process's

    @property
    def flags(self) -> list[str]:
        """A break or a recompile means part of the step ran eagerly or compiled twice (on any rank)."""
        if self.flags_over_ranks is not None:
            return list(self.flags_over_ranks)
        return ["compile-fallback"] if self.graph_breaks or self.recompiles else []

    def over_ranks(self, flags_per_rank: list[list[str]]) -> "Compile":
        """The same compile with a flag raised on any rank as the cell's."""
        return replace(self, flags_over_ranks=list(dict.fromkeys(f for flags in flags_per_rank for f in flags)))

    def to_record(self) -> dict:
        return {"compile_s": round(self.seconds, 3), "compile_graph_breaks": self.graph_breaks,
                "compile_recompiles": self.recompiles}


class CompileWatch:
    """``with CompileWatch(step, device) as watch: <time the step>`` then ``watch.result``.

    Entering runs (and times) the first call; dynamo's counters are cleared first, so the graphs
    it made are the compile's and any graph made later is a recompile."""

    def __init__(self, step: Callable[[], object], device: torch.device):
        self.step = step
        self.device = device
        self.result: Compile | None = None

    def __enter__(self) -> "CompileWatch":
        from torch._dynamo.utils import counters

        counters.clear()
        t0 = time.perf_counter()
        self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._seconds = time.perf_counter() - t0
        self._graphs_after_compile = counters["stats"]["unique_graphs"]
        return self

    def __exit__(self, *exc) -> None:
        from torch._dynamo.utils import counters

        self.result = Compile(seconds=self._seconds, graph_breaks=sum(counters["graph_break"].values()),
                              recompiles=counters["stats"]["unique_graphs"] - self._graphs_after_compile)
