"""Where a multi-rank training step's time goes on the wire: a few profiled steps after the timing.

For each multi-rank train cell, ``--comm-steps`` extra steps (after one untimed warm-up step) run
under torch.profiler, outside the timed loop and the memory window, with ``record_shapes`` so the
collectives carry their sizes. Each rank exports its Kineto trace, gzipped, to
``RUN_DIR/traces/comm/<cell>/rank<R>.json.gz`` (kept: a few MB per rank for resnet18, readable by
Perfetto and HTA); rank 0 reads its own and its figures are the record's (every rank runs the same
collectives; the others' traces are there to compare).

What a torch 2.14 CPU gloo trace carries (looked at, not assumed): no ``record_param_comms`` events.
The main thread has ``c10d::allreduce_`` / ``c10d::_allgather_base_`` / ... ``cpu_op`` events that
only enqueue the work (tens of us); the transfer itself is a ``user_annotation`` named
``gloo:all_reduce`` / ``gloo:all_gather`` / ``gloo:broadcast`` on a ``pt_gloo_runloop`` thread,
whose args (with ``record_shapes``) hold ``Input Dims`` and the C type (``float``, ``long int``).
Gloo has no reduce-scatter: c10d runs ``_reduce_scatter_base_`` as an all-reduce of the whole input,
so FSDP2's reduce-scatters are traced as ``gloo:all_reduce`` of the full gradient. A gloo
all-gather's dims are the rank's input; its payload (nccl-tests' ``size``) is that x world size.
On CUDA (NCCL), ``record_param_comms`` carries ``Collective name``, ``In msg nelems``,
``Out msg nelems`` and ``dtype``, and the transfer is an ``nccl*`` kernel, joined to the
``record_param_comms`` it was launched for through its launch event (``correlation``) or its
``External id`` (``_nccl_collectives``), never by list position. A CUDA trace names each step twice:
a CPU ``user_annotation`` ProfilerStep#k and a ``gpu_user_annotation`` of the same name per stream;
steps are counted on the CPU, and kernels are clipped to the steps' device windows (the tests use
hand-made traces of that shape; no GPU has produced one for them yet).

The figures, per profiled step (mean over the ``ProfilerStep#`` windows):
- ``comm_ms``: the union of the collective intervals (two buckets in flight at once count once);
- ``comm_exposed_ms``: that union minus its intersection with the union of compute intervals
  (CPU: ``aten::`` ops on any thread but gloo's; CUDA: non-NCCL kernels), so the part of the
  collectives nothing else ran beside. On CPU, "overlapped" means concurrent, not free: gloo's
  reduction and the compute share the cores;
- ``comm_exposed_share``: ``comm_exposed_ms`` over the profiled step time;
- ``comm_bytes``: the traced payload (nccl-tests' ``size``: the whole buffer of an all-reduce, the
  gathered output of an all-gather, the unscattered input of a reduce-scatter);
- ``comm_busbw_gbps``: per collective kind, algbw = bytes / the union of that kind's intervals,
  busbw = algbw x 2(n-1)/n for all-reduce, x (n-1)/n for all-gather and reduce-scatter, x 1 for the
  rest (nccl-tests' PERFORMANCE.md); combined over kinds weighted by bytes.

The prediction (each engine's ``comm_prediction``), from the trainable parameter count P, the gradient element size e,
the model's buffers B (bytes) and the world size n, per step:
- DDP: one all-reduce of all trainable gradients, P x e (bucketed; the buckets are views of the
  gradients, no padding), plus the broadcast of the buffers from rank 0 at each forward
  (``broadcast_buffers``, BatchNorm statistics): B. The parameter broadcast at construction is
  outside the steps.
- DeepSpeed ZeRO-1/2: the gradients reduced, P x e, plus the all-gather of the updated
  parameters, ceil(P / n) x n x e. DeepSpeed 0.19 on CPU gloo reduces the gradients with one
  all-reduce of the flat buffer (``overlap_comm``, one bucket below ``reduce_bucket_size``), not a
  reduce-scatter; the bytes are the same in nccl-tests' convention. It also all-reduces a scalar
  (the overflow check) and pads the flat partition to its alignment: a few bytes.
- DeepSpeed ZeRO-3 / FSDP2: all-gather of the parameters in forward, again in backward for the
  units freed after forward, and a reduce-scatter of the gradients: between 2 x P x e (nothing
  re-gathered) and 3 x P x e (everything re-gathered). Which units are re-gathered is the engine's
  policy, not the parameter count's: bench's FSDP2 keeps the last block and the root after forward
  (resnet18 at 64 px on gloo: 2.55 x P x e traced); DeepSpeed 0.19 keeps gathered parameters for
  reuse within ``stage3_max_reuse_distance`` (resnet18: 2.0 x P x e, no backward all-gather).
  ``comm_bytes_predicted`` is the upper bound, ``comm_bytes_predicted_min`` the lower.
Traced bytes outside the predicted [min, max] by more than ``BYTES_TOLERANCE`` (1%: padding is at
most a few elements per rank and scalar all-reduces a few bytes, while a missing or doubled
gradient sync is >= 30%) -> flag ``comm-bytes-mismatch``. Measured on resnet18 at 64 px, 2 ranks:
DDP traced == predicted to the byte; ZeRO-2 4 bytes over (the overflow-check scalar).

Why not HolisticTraceAnalysis: HTA 0.5.0 installs offline (with plotly, networkx, pydot) and parses
these traces, but ``get_comm_comp_overlap`` counts only GPU kernels (rows with ``stream != -1``);
a CPU gloo trace has none, so it returns NaN for every rank. It has no notion of the gloo runloop
threads or of payload bytes. The interval arithmetic here is a few sorted-interval sweeps (numpy
is not needed for a few thousand events).
"""
from __future__ import annotations

import gzip
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from bench.errors import first_line
from bench.launch.context import DistContext, all_gather, broadcast_object
from bench.traffic import Prediction

Interval = tuple[float, float]

BYTES_TOLERANCE = 0.01
MISMATCH_FLAG = "comm-bytes-mismatch"
UNMEASURED_FLAG = "comm-unmeasured"

# C type names in gloo annotations' "Input type" and dtype names in record_param_comms -> bytes.
_ELEMENT_BYTES = {
    "float": 4, "double": 8, "c10::half": 2, "c10::bfloat16": 2, "int": 4, "long int": 8, "long": 8,
    "short int": 2, "signed char": 1, "unsigned char": 1, "bool": 1, "c10::float8_e4m3fn": 1,
    "float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "half": 2, "int32": 4, "int64": 8, "int8": 1,
    "uint8": 1, "byte": 1, "char": 1,
}
# Collective names as traced -> the kind used for busbw.
_KINDS = {
    "all_reduce": "all_reduce", "allreduce": "all_reduce", "allreduce_coalesced": "all_reduce",
    "all_gather": "all_gather", "allgather": "all_gather", "_allgather_base": "all_gather",
    "allgather_into_tensor_coalesced": "all_gather", "all_gather_into_tensor": "all_gather",
    "reduce_scatter": "reduce_scatter", "_reduce_scatter_base": "reduce_scatter",
    "reduce_scatter_tensor_coalesced": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter",
    "broadcast": "broadcast", "reduce": "reduce", "all_to_all": "all_to_all", "alltoall_base": "all_to_all",
    "barrier": "barrier",
}


# --------------------------------------------------------------------------------------------
# Interval arithmetic


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering the same time (touching ones merged)."""
    merged: list[list[float]] = []
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def length(intervals: Iterable[Interval]) -> float:
    return sum(e - s for s, e in union(intervals))


def intersection(a: Iterable[Interval], b: Iterable[Interval]) -> float:
    """Length of the time covered by both ``a`` and ``b`` (a two-pointer sweep over their unions)."""
    ua, ub = union(a), union(b)
    i = j = 0
    total = 0.0
    while i < len(ua) and j < len(ub):
        lo, hi = max(ua[i][0], ub[j][0]), min(ua[i][1], ub[j][1])
        total += max(0.0, hi - lo)
        if ua[i][1] < ub[j][1]:
            i += 1
        else:
            j += 1
    return total


def exposed(comm: Iterable[Interval], compute: Iterable[Interval]) -> float:
    """Collective time with no compute beside it: |union(comm)| - |union(comm) ∩ union(compute)|."""
    comm = union(comm)
    return length(comm) - intersection(comm, compute)


def clip(intervals: Iterable[Interval], windows: list[Interval]) -> list[Interval]:
    """The parts of ``intervals`` inside any of ``windows`` (disjoint)."""
    out = []
    for s, e in intervals:
        for ws, we in windows:
            lo, hi = max(s, ws), min(e, we)
            if hi > lo:
                out.append((lo, hi))
    return out


# --------------------------------------------------------------------------------------------
# Bus bandwidth (nccl-tests, doc/PERFORMANCE.md)


def bus_factor(kind: str, world_size: int) -> float:
    """busbw / algbw for one collective kind on ``world_size`` ranks."""
    n = world_size
    if kind == "all_reduce":
        return 2 * (n - 1) / n
    if kind in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    return 1.0


@dataclass
class KindStats:
    """One collective kind's traffic per profiled step."""

    kind: str
    count: float  # calls per step
    bytes: float  # payload per step (nccl-tests' size)
    time_ms: float  # union of this kind's intervals per step
    busbw_gbps: float | None


def kind_stats(kind: str, count: float, nbytes: float, time_ms: float, world_size: int) -> KindStats:
    algbw = nbytes / (time_ms / 1e3) / 1e9 if time_ms > 0 and nbytes > 0 else None
    return KindStats(kind, count, nbytes, time_ms, None if algbw is None else algbw * bus_factor(kind, world_size))


def combined_busbw(kinds: list[KindStats]) -> float | None:
    """The kinds' bus bandwidths weighted by their bytes (scalars and barriers weigh nothing)."""
    known = [k for k in kinds if k.busbw_gbps is not None and k.bytes > 0]
    total = sum(k.bytes for k in known)
    return sum(k.busbw_gbps * k.bytes for k in known) / total if total else None


# --------------------------------------------------------------------------------------------
# The prediction


# Each engine predicts its own traffic (``Engine.comm_prediction``, the formulas above); the
# prediction's type lives in the leaf bench.traffic so that engines and measure share it.


def mismatch(traced: float, predicted: Prediction | None, tolerance: float = BYTES_TOLERANCE) -> bool:
    """Traced bytes outside the predicted payload (or [low, high] range) by more than ``tolerance``."""
    if predicted is None or predicted.bytes <= 0:
        return False
    low = predicted.bytes if predicted.low is None else predicted.low
    return traced < low * (1 - tolerance) or traced > predicted.bytes * (1 + tolerance)


# --------------------------------------------------------------------------------------------
# Reading a Kineto trace


@dataclass
class Collective:
    kind: str
    start_us: float
    end_us: float
    nbytes: float


@dataclass
class TraceFacts:
    """What the analysis needs from one rank's trace."""

    steps: list[Interval]  # the CPU ProfilerStep#k windows, us: one per profiled step
    collectives: list[Collective]
    compute: list[Interval]
    # CUDA: each step's window on the device (the union over streams of its gpu_user_annotation),
    # where its kernels ran; empty on CPU, where the CPU windows are the steps' time.
    gpu_steps: list[Interval] = field(default_factory=list)

    @property
    def windows(self) -> list[Interval]:
        """Where the step's work ran: the GPU windows on CUDA (kernels run after their launch, so
        clipping them to the CPU windows would cut the last ones off), the CPU windows otherwise."""
        return union(self.gpu_steps or self.steps)


def _element_bytes(type_name: str) -> int:
    return _ELEMENT_BYTES.get(str(type_name).strip().lower(), 4)


def _kind(name: str) -> str:
    key = name.lower().split(":", 1)[-1].strip().rstrip("_")
    return _KINDS.get(key, key)


def _gloo_collective(event: dict, world_size: int) -> Collective:
    args = event.get("args") or {}
    dims = (args.get("Input Dims") or [[]])[0] or []
    numel = math.prod(dims) if dims else 1  # a 0-d tensor is one element
    nbytes = numel * _element_bytes((args.get("Input type") or ["float"])[0])
    kind = _kind(event["name"])
    if kind == "all_gather":  # the annotation shows the rank's input; the payload is the gathered output
        nbytes *= world_size
    return Collective(kind, event["ts"], event["ts"] + event["dur"], nbytes)


def _param_comms_size(event: dict) -> tuple[str, float]:
    """(kind, bytes) of one ``record_param_comms`` event (CUDA traces)."""
    args = event.get("args") or {}
    nelems = max(args.get("In msg nelems") or 0, args.get("Out msg nelems") or 0)
    return _kind(args["Collective name"]), nelems * _element_bytes(args.get("dtype", "float"))


def _is_param_comms(event: dict) -> bool:
    return event.get("name") == "record_param_comms" and "Collective name" in (event.get("args") or {})


def _steps(spans: list[dict]) -> tuple[list[Interval], list[Interval]]:
    """(CPU step windows, GPU step windows). A CUDA trace names each step twice: the CPU
    ``user_annotation`` ProfilerStep#k and, on the device, a ``gpu_user_annotation`` of the same
    name (one per stream its kernels ran on). Only the CPU ones count steps; the GPU ones of one
    name are merged into that step's device window."""
    cpu, gpu = [], {}
    for e in spans:
        name = str(e.get("name", ""))
        if not name.startswith("ProfilerStep#"):
            continue
        if e.get("cat") == "gpu_user_annotation":
            lo, hi = gpu.get(name, (math.inf, -math.inf))
            gpu[name] = (min(lo, e["ts"]), max(hi, e["ts"] + e["dur"]))
        else:
            cpu.append((e["ts"], e["ts"] + e["dur"]))
    return sorted(cpu), sorted(gpu.values())


def _nccl_collectives(spans: list[dict], nccl: list[dict]) -> list[Collective]:
    """Each NCCL kernel with the size of the ``record_param_comms`` it was launched for, joined by
    id, never by list position (a warm-up kernel or a coalesced group would shift every pair
    after it).

    Kineto ties a kernel to its launch (``cudaLaunchKernel`` / ``cuLaunchKernelEx``: a
    ``cuda_runtime`` / ``cuda_driver`` event) by ``correlation``, and to the CPU op it ran under by
    ``External id``; either gives the launching thread and the time of the launch. The kernel's
    collectives are the ``record_param_comms`` events on that thread that began after the previous
    NCCL launch there and no later than this one: the one enclosing the launch for a plain
    collective, every member of a coalesced group (one kernel for several), none for a kernel no
    collective was recorded for (then its kind comes from its name and its bytes are 0)."""
    comms = sorted((e for e in spans if _is_param_comms(e)), key=lambda e: e["ts"])
    launches = {(e.get("args") or {}).get("correlation"): e for e in spans
                if e.get("cat") in ("cuda_runtime", "cuda_driver")
                and (e.get("args") or {}).get("correlation") is not None}
    cpu_by_external = {}
    for e in spans:
        ext = (e.get("args") or {}).get("External id")
        if ext is not None and e.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation"):
            cpu_by_external.setdefault(ext, e)

    def anchor(kernel: dict) -> dict | None:
        args = kernel.get("args") or {}
        return launches.get(args.get("correlation")) or cpu_by_external.get(args.get("External id"))

    anchored = sorted(((anchor(k), k) for k in nccl), key=lambda ak: (ak[0] is None, ak[0]["ts"] if ak[0] else 0))
    previous: dict = {}  # thread -> the previous NCCL launch's time there
    out = []
    for launch, k in anchored:
        matched: list[dict] = []
        if launch is not None:
            tid, t = launch.get("tid"), launch["ts"]
            since = previous.get(tid, -math.inf)
            matched = [c for c in comms if c.get("tid") == tid and since < c["ts"] <= t]
            previous[tid] = t
        sizes = [_param_comms_size(c) for c in matched]
        kinds = [kind for kind, nbytes in sizes if nbytes > 0] or [kind for kind, _ in sizes]
        out.append(Collective(kinds[0] if kinds else _kind_of_kernel(k["name"]), k["ts"], k["ts"] + k["dur"],
                              float(sum(nbytes for _, nbytes in sizes))))
    return sorted(out, key=lambda c: c.start_us)


def _kind_of_kernel(name: str) -> str:
    """``ncclDevKernel_AllReduce_Sum_bf16_RING_LL`` -> all_reduce (a kernel with no record_param_comms)."""
    low = name.lower().replace("_", "")
    for key, kind in (("allreduce", "all_reduce"), ("allgather", "all_gather"), ("reducescatter", "reduce_scatter"),
                      ("broadcast", "broadcast"), ("sendrecv", "send_recv"), ("alltoall", "all_to_all"),
                      ("reduce", "reduce")):
        if key in low:
            return kind
    return "nccl"


def read_trace(path: Path, world_size: int) -> TraceFacts:
    """Steps, collectives and compute intervals of one rank's Chrome/Kineto trace (.json or .json.gz)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        events = json.load(fh)["traceEvents"]
    gloo_threads = {e.get("tid") for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
                    and "gloo" in str((e.get("args") or {}).get("name", ""))}
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    steps, gpu_steps = _steps(spans)
    collectives = [_gloo_collective(e, world_size) for e in spans if str(e.get("name", "")).startswith("gloo:")]
    kernels = [e for e in spans if e.get("cat") == "kernel"]
    if kernels:  # CUDA: NCCL kernels are the collectives, the other kernels the compute
        collectives = _nccl_collectives(spans, [e for e in kernels if "nccl" in e["name"].lower()])
        compute = [(e["ts"], e["ts"] + e["dur"]) for e in kernels if "nccl" not in e["name"].lower()]
    else:  # CPU: aten ops off the gloo threads (c10d ops only enqueue or wait)
        compute = [(e["ts"], e["ts"] + e["dur"]) for e in spans if e.get("cat") == "cpu_op"
                   and e.get("tid") not in gloo_threads and str(e.get("name", "")).startswith("aten::")]
    return TraceFacts(steps, collectives, compute, gpu_steps)


# --------------------------------------------------------------------------------------------
# The result


@dataclass
class CommResult:
    """Per profiled step, from rank 0's trace."""

    steps: int
    step_ms: float
    comm_ms: float
    exposed_ms: float
    bytes: float
    busbw_gbps: float | None
    kinds: list[KindStats]
    predicted: Prediction | None
    method: str
    trace_dir: str | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def exposed_share(self) -> float | None:
        return min(1.0, max(0.0, self.exposed_ms / self.step_ms)) if self.step_ms > 0 else None

    def to_record(self) -> dict:
        return {
            "comm_steps": self.steps, "comm_step_ms": round(self.step_ms, 3), "comm_ms": round(self.comm_ms, 3),
            "comm_exposed_ms": round(self.exposed_ms, 3), "comm_exposed_share": self.exposed_share,
            "comm_bytes": self.bytes, "comm_bytes_predicted": self.predicted.bytes if self.predicted else None,
            "comm_bytes_predicted_min": self.predicted.low if self.predicted else None,
            "comm_prediction": self.predicted.formula if self.predicted else None,
            "comm_busbw_gbps": self.busbw_gbps, "comm_collectives": [asdict(k) for k in self.kinds],
            "comm_method": self.method, "comm_trace_dir": self.trace_dir,
        }


def analyse(facts: TraceFacts, world_size: int, predicted: Prediction | None, method: str) -> CommResult:
    """Per-step figures from one rank's trace facts (collectives and compute clipped to the steps'
    windows: on the device on CUDA; the step time is then the device's too)."""
    if not facts.steps:
        raise ValueError("no ProfilerStep# window in the trace")
    windows = facts.windows
    n_steps = len(facts.steps)  # the CPU steps: a CUDA trace's GPU annotations are the same steps
    inside = [c for c in facts.collectives if any(c.start_us < we and c.end_us > ws for ws, we in windows)]
    comm = clip([(c.start_us, c.end_us) for c in inside], windows)
    compute = clip(facts.compute, windows)
    kinds = []
    for kind in sorted({c.kind for c in inside}):
        of_kind = [c for c in inside if c.kind == kind]
        time_ms = length(clip([(c.start_us, c.end_us) for c in of_kind], windows)) / 1e3 / n_steps
        kinds.append(kind_stats(kind, len(of_kind) / n_steps, sum(c.nbytes for c in of_kind) / n_steps, time_ms,
                                world_size))
    traced = sum(k.bytes for k in kinds)
    flags = [MISMATCH_FLAG] if mismatch(traced, predicted) else []
    return CommResult(steps=len(facts.steps), step_ms=length(windows) / 1e3 / n_steps,
                      comm_ms=length(comm) / 1e3 / n_steps, exposed_ms=exposed(comm, compute) / 1e3 / n_steps,
                      bytes=traced, busbw_gbps=combined_busbw(kinds), kinds=kinds, predicted=predicted,
                      method=method, flags=flags)


def profile_steps(step: Callable[[], object], steps: int, trace_path: Path, cuda: bool) -> Path:
    """Run one warm-up and ``steps`` profiled steps; export the Kineto trace (gzipped) to ``trace_path``."""
    from torch.profiler import ProfilerActivity, profile, schedule

    trace_path.parent.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=steps, repeat=1),
                 on_trace_ready=lambda prof: prof.export_chrome_trace(str(trace_path)), record_shapes=True) as prof:
        for _ in range(1 + steps):
            step()
            prof.step()
    return trace_path


def free_dir(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name_2``, ``name_3``... when a repeat of the cell already wrote there."""
    path, k = parent / name, 1
    while path.exists():
        k += 1
        path = parent / f"{name}_{k}"
    return path


def _cell_dir(parent: Path, name: str, ctx: DistContext) -> tuple[Path | None, str | None]:
    """Rank 0 creates the cell's trace folder; every rank gets (folder, None) or (None, why not)."""
    chosen: tuple[str | None, str | None] = (None, None)
    if ctx.is_main:
        try:
            path = free_dir(parent, name)
            path.mkdir(parents=True)
            chosen = (str(path), None)
        except OSError as exc:  # RUN_DIR/traces a file, a full disk: the timing stands
            chosen = (None, f"cannot write the comm traces under {parent}: {first_line(exc, with_type=True)}")
    folder, error = broadcast_object(chosen, ctx)
    return (Path(folder) if folder else None), error


def measure_comms(step: Callable[[], object], ctx: DistContext, steps: int, parent: Path, name: str,
                  predicted: Prediction | None) -> tuple[dict, list[str]]:
    """Every rank profiles ``steps`` steps into ``<parent>/<name>/rank<R>.json.gz``; rank 0 reads
    its own trace. Returns (record fields, flags), the same on every rank. A folder or trace that
    cannot be written or read is said (``comm_error``, flag ``comm-unmeasured``), never the cell's
    failure: every rank reaches the same collectives whatever failed where."""
    method = (f"kineto trace (record_shapes), {steps} steps after the timing and 1 warm-up, rank 0; "
              "collectives: " + ("NCCL kernels" if ctx.device.type == "cuda" else "gloo runloop annotations")
              + "; own interval arithmetic (HTA counts GPU kernels only)")
    unmeasured = {"comm_steps": steps, "comm_method": method}
    cell_dir, error = _cell_dir(parent, name, ctx)
    if cell_dir is None:
        return unmeasured | {"comm_error": error}, [UNMEASURED_FLAG]
    path = cell_dir / f"rank{ctx.rank}.json.gz"
    try:
        profile_steps(step, steps, path, ctx.device.type == "cuda")
    except OSError as exc:  # the export (a step that fails fails on its own, as in the timing)
        error = f"rank {ctx.rank}: {first_line(exc, with_type=True)}"
    errors = [e for e in all_gather(error, ctx) if e]
    result: tuple[dict, list[str]] | None = None
    if ctx.is_main:
        try:
            if errors:
                raise RuntimeError(errors[0])
            res = analyse(read_trace(path, ctx.world_size), ctx.world_size, predicted, method)
            res.trace_dir = str(cell_dir)
            result = res.to_record(), res.flags
        except Exception as exc:  # noqa: BLE001 - the timing stands; the analysis' failure is said
            result = unmeasured | {"comm_error": first_line(exc), "comm_trace_dir": str(cell_dir)}, [UNMEASURED_FLAG]
    return broadcast_object(result, ctx)
