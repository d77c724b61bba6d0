"""The record schema (one dataclass: every field with its unit and kind) and the run directory.

A record is one finished cell, one JSON line. ``Record`` lists every field a record may hold; the
writers (classify, finetune, sweep) are checked against it when they append (an unknown field is a
programming error, caught by the tests), and the report reads it to decide what to show: fields of
kind ``setting`` that vary between cells become columns, a ``measure`` declared with a ``Display``
is a column of its section's main or details table (label, unit, direction, format: declared once,
here), ``provenance`` goes into the details view. Readers go through ``schema()``, which holds each
field's python type. ``schema_version`` is in every record; ``upgrade`` reads older records (every
shim for them lives there).

The run directory, ``RUN_DIR/``:
- ``records.jsonl``: the records of single-process and rank-0 writers; a concurrent writer that is
  one of several (SLURM array tasks, jobs sharing ``--out``) writes its own shard
  ``records.<writer>.jsonl`` (O_APPEND is not atomic across NFS clients). Readers take all as one.
- ``invocations.jsonl``: one line per command that passed validation (command, git commit,
  environment); each record names its invocation. ``env.json`` keeps the first one (older readers).
- ``claims/``: one exclusive claim file per cell being measured (bench.sweep).

Writing is all-or-nothing: one ``os.write`` of the whole line, checked for a short write, then
fsync. A torn tail left by a kill mid-write is moved to ``records.torn-<time>.jsonl`` (its bytes
kept) before the next append, and said so. Reading skips unreadable lines (not JSON, not an
object, invalid UTF-8) with one warning that counts them.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import math
import os
import secrets
import socket
import sys
import time
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

SCHEMA_VERSION = 2
RECORDS = "records.jsonl"
INVOCATIONS = "invocations.jsonl"
ENV = "env.json"

# Field kinds: what a field is for, so the report needs no list of its own.
CELL, SETTING, MEASURE, PROVENANCE = "cell", "setting", "measure", "provenance"
# The report's parts a measured field can be shown in (Display.sections).
PERFORMANCE, FINETUNE = "performance", "finetune"


def slowest(value: Any) -> float | None:
    """The one number of a per-rank list: the slowest rank sets the pace."""
    if isinstance(value, (list, tuple)):
        numbers = [x for x in value if isinstance(x, (int, float)) and not isinstance(x, bool)]
        return max(numbers) if numbers else None
    return value


def span(value: Any, number: Callable[[float], str]) -> str | None:
    """A [low, high] interval as "low–high", each end written by ``number``; None when the value
    is not two numbers (a hand-edited record)."""
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)):
        return f"{number(value[0])}–{number(value[1])}"
    return None


@dataclass(frozen=True)
class Display:
    """How the report shows a measured field, declared once beside the field: the report derives
    its columns, best-value marks and number formats from these, so it keeps no list of its own."""

    label: str
    unit: str | None = None  # the header's unit; None: the field's own unit, "": none
    better: str = ""  # "min" | "max" | "": a reference figure, never marked best
    scale: float = 1.0  # shown as value × scale (1e-6: parameters in millions; 100: a fraction in %)
    fmt: str = ""  # a format spec (".0f" for counts); "": about four significant digits
    sections: tuple[str, ...] = (PERFORMANCE,)  # where it is shown; the first is its own
    main: bool = True  # in the section's main table; else in its details table
    scalar: Callable[[Any], float | None] | None = None  # the number a list-valued field stands for
    text: Callable[[Any, Callable[[float], str]], str | None] | None = None  # how a list value reads


def _f(kind: str, unit: str = "", doc: str = "", show: Display | None = None) -> Any:
    return field(default=None, metadata={"kind": kind, "unit": unit, "doc": doc, "display": show})


def _worst_cosine(agreement: Any) -> float | None:
    """The one number of an agreement: its worst cosine against the reference."""
    return agreement.get("worst_cosine") if isinstance(agreement, dict) else None


_COUNT = {"unit": "", "fmt": ".0f"}  # an iteration or event count: a whole number, no unit
_PERCENT = {"unit": "%", "scale": 100.0}  # a fraction shown in percent
_TUNE = {"sections": (FINETUNE,)}
_BOTH = {"sections": (PERFORMANCE, FINETUNE)}


@dataclass
class Record:
    """Every field a record may hold. Units: ms, s, MB (2**20 bytes), GMACs (1e9 multiply-adds)."""

    schema_version: int | None = _f(PROVENANCE)
    kind: str | None = _f(CELL, doc="run | finetune")
    # --- the cell
    task: str | None = _f(CELL, doc="cls | det | seg")
    model: str | None = _f(CELL)
    family: str | None = _f(CELL)
    res: str | None = _f(CELL, doc="the size asked for, height first")
    height: int | None = _f(CELL, "px")
    width: int | None = _f(CELL, "px")
    input_hw: list | None = _f(CELL, "px", "the size fed to the model (det pads to a multiple of 32)")
    mode: str | None = _f(CELL, doc="infer | train | det | seg")
    batch: int | None = _f(CELL, "images per rank")
    cell_key: str | None = _f(CELL)
    repeat: int | None = _f(CELL, doc="which visit of the cell, 0..repeats-1 (absent in old records: 0)")
    repeats: int | None = _f(SETTING, doc="--repeats: visits per cell, in interleaved rounds")
    order_seed: int | None = _f(SETTING, doc="seed of the cell order shuffled in each round (--repeats >= 2)")
    config_id: str | None = _f(CELL, doc="hash of the measuring configuration (resume identity)")
    settings_id: str | None = _f(CELL, doc="hash of the command's settings without the runtime (slurm status)")
    cell_index: int | None = _f(PROVENANCE, doc="position of the cell in this process's visit order (0: first); "
                                "what ran before it in the process can change its CPU memory")
    # --- measuring settings
    device: str | None = _f(SETTING)
    device_name: str | None = _f(SETTING)
    device_count: int | None = _f(SETTING)
    dtype: str | None = _f(SETTING, doc="--dtype as given")
    precision: str | None = _f(SETTING, doc="fp32 | amp-bf16 | amp-fp16 | bf16-weights")
    tf32: bool | None = _f(SETTING)
    cudnn_benchmark: bool | None = _f(SETTING)
    engine: str | None = _f(SETTING)
    zero: int | None = _f(SETTING, doc="effective ZeRO stage")
    world_size: int | None = _f(SETTING)
    threads: int | None = _f(SETTING, "threads per rank")
    channels_last: bool | None = _f(SETTING)
    numerics: bool | None = _f(SETTING, doc="--numerics: cells whose math differs from fp32 eager were checked")
    compile: bool | None = _f(SETTING)
    backend: str | None = _f(SETTING, doc="--backend: eager | compile | aoti | onnxruntime | onnxruntime-int8 | "
                             "openvino | tensorrt (bench.deploy); absent in older records: eager")
    grad_clip: float | None = _f(SETTING)
    budget_s: float | None = _f(SETTING, "s")
    max_time_s: float | None = _f(SETTING, "s")
    setup_timeout_s: float | None = _f(SETTING, "s", "--setup-timeout: the limit on the cell's set-up")
    optimizer_impl: str | None = _f(SETTING)
    ds_config: dict | None = _f(SETTING, doc="the effective DeepSpeed config")
    global_batch: int | None = _f(SETTING, "images")
    # --- cost
    params: int | None = _f(MEASURE, "parameters", show=Display("params", "M", "min", 1e-6))
    gmacs: float | None = _f(MEASURE, "GMACs", show=Display("GMACs", "", "min"))
    gflops: float | None = _f(MEASURE, "GFLOPs (2 x GMACs)")
    stage_gmacs: dict | None = _f(MEASURE, "GMACs")
    attention_gmacs_per_stage: dict | None = _f(MEASURE, "GMACs")
    part_gmacs: dict | None = _f(MEASURE, "GMACs")
    part_params: dict | None = _f(MEASURE, "parameters")
    part_latency_ms: dict | None = _f(MEASURE, "ms", "median per part, each timed apart by the timing protocol")
    flops_skipped_ops: dict | None = _f(MEASURE, "calls", "ops the FLOP counter could not count, op -> calls; "
                                        "a non-trivial one (bench.measure.flops.TRIVIAL_OPS) flags flops-incomplete")
    flops_trainable_fraction: float | None = _f(MEASURE, doc="MAC share of modules whose parameters train (the "
                                                "weight-gradient share of the training FLOPs)")
    flops_crosscheck_gmacs: float | None = _f(MEASURE, "GMACs", "torch.utils.flop_counter on the explicit "
                                              "attention path: matmul, conv and attention")
    flops_crosscheck_rel_diff: float | None = _f(MEASURE, doc="|cross-check - fvcore| / fvcore on those ops")
    part_latency_ci95_ms: dict | None = _f(MEASURE, "ms", "95% CI of each part's median (None: < 6 samples)")
    part_latency_iters: dict | None = _f(MEASURE, "iterations", "timed iterations per part")
    part_latency_setup: str | None = _f(MEASURE, doc="autocast, weights, layout, compilation of the parts")
    det_load: str | None = _f(MEASURE, doc="det: the NMS load timed (score_thresh and why)")
    nms_candidates: float | None = _f(MEASURE, "boxes per image", "det: boxes that entered NMS (mean over the batch)",
                                      Display("NMS candidates", "boxes/image", main=False, fmt=".0f"))
    fps_real_images: float | None = _f(MEASURE, "images/s", "det --data coco:DIR: the mmdet / PVT-paper protocol, "
                                       "batch 1, val images at own aspect ratio: images / summed time",
                                       Display("FPS (real images)", "img/s", "max"))
    fps_images: int | None = _f(MEASURE, "images", "images timed for fps_real_images")
    fps_protocol: str | None = _f(MEASURE, doc="how fps_real_images was measured, in words")
    # --- time
    latency_ms: float | None = _f(MEASURE, "ms", "median per iteration", Display("latency", "ms, median", "min"))
    latency_p10_ms: float | None = _f(MEASURE, "ms", show=Display("latency p10", main=False))
    latency_p90_ms: float | None = _f(MEASURE, "ms", show=Display("latency p90", better="min"))
    latency_cv: float | None = _f(MEASURE, doc="stdev / mean", show=Display("CV", main=False, **_PERCENT))
    latency_ci95_ms: list | None = _f(MEASURE, "ms", "95% CI of the median [low, high]",
                                      Display("latency 95% CI", text=span))
    latency_ci_coverage: float | None = _f(MEASURE, doc="exact coverage of the order-statistic CI at this n "
                                           "(fixed n; stopping at the first narrow CI lowers it)")
    latency_p99_ms: float | None = _f(MEASURE, "ms", "only where n >= 100", Display("latency p99", main=False))
    latency_samples_ms: list | None = _f(MEASURE, "ms", "every timed iteration in order (several ranks: the "
                                         "slowest rank's time per iteration); thinned evenly above 5,000")
    latency_blocks: list | None = _f(MEASURE, "iterations", "the sizes of the timed blocks, in order")
    samples_thinned: bool | None = _f(MEASURE, doc="latency_samples_ms keeps an even subset; statistics used all")
    iters: int | None = _f(MEASURE, "iterations timed", show=Display("timed iters", main=False, **_COUNT))
    warmup_iters: int | None = _f(MEASURE, "iterations", show=Display("warm-up iters", main=False, **_COUNT))
    timing_stable: bool | None = _f(MEASURE)
    timing_stop: str | None = _f(MEASURE)
    timing_flags: list | None = _f(MEASURE)
    compile_s: float | None = _f(MEASURE, "s", "the first call, timed apart", Display("compile time", better="min"))
    setup_s: float | None = _f(MEASURE, "s", "the cell's start to its first timed iteration (build, engine, compile "
                               "or first step, batch search): outside --max-time", Display("set-up", "s", "min",
                                                                                           main=False))
    first_step_s: float | None = _f(MEASURE, "s", "the untimed first step of an eager cell (its allocations, cuDNN "
                                    "autotuning, an engine's first-use builds)")
    agreement: dict | None = _f(MEASURE, doc="the cell against the fp32 eager reference on the same weights and input "
                                "(bench.measure.agreement): per_output cosine / rel_l2 / max_abs, worst_cosine, "
                                "training loss_rel_err and grad_cosine, det/seg task_agreement, tolerance, failures",
                                show=Display("agreement (worst cosine)", better="max", fmt=".6f", scalar=_worst_cosine))
    agreement_s: float | None = _f(PROVENANCE, "s", "what the numerics check took, outside the timing")
    accuracy_vs_labels: dict | None = _f(MEASURE, doc="--accuracy-data: mAP / mIoU of the reference and of the cell on "
                                         "real validation labels, their ratio and MLPerf's 0.99 gate")
    agreement_error: str | None = _f(MEASURE, doc="why the numerics check could not run (flag numerics-unchecked)")
    compile_graph_breaks: int | None = _f(MEASURE, show=Display("graph breaks", main=False, **_COUNT))
    compile_recompiles: int | None = _f(MEASURE, show=Display("recompiles", main=False, **_COUNT))
    per_rank_step_ms: list | None = _f(MEASURE, "ms", show=Display("step per rank", better="min", scalar=slowest))
    throughput: float | None = _f(MEASURE, "images/s (global)", "sustained: images over the summed time of the "
                                  "timed blocks", Display("throughput", "img/s", "max", **_BOTH))
    throughput_per_rank: float | None = _f(MEASURE, "images/s", "one rank's images over the same time")
    scaling_efficiency: float | None = _f(MEASURE, show=Display("scaling efficiency", better="max", **_PERCENT))
    scaling_basis: str | None = _f(MEASURE)
    achieved_tflops: float | None = _f(MEASURE, "TFLOP/s", show=Display("achieved TFLOP/s", "", "max"))
    peak_tflops: float | None = _f(MEASURE, "TFLOP/s", "GEMM sweep, best median, same dtype (bench.measure.peak)",
                                   Display("matmul peak", main=False))
    mfu: float | None = _f(MEASURE, show=Display("MFU", better="max", **_PERCENT))
    peak_tflops_ci95: list | None = _f(MEASURE, "TFLOP/s", "95% CI of the measured peak's median [low, high]")
    peak_method: str | None = _f(MEASURE, doc="how the MFU peak was measured (GEMM sizes, when, statistic)")
    peak_tflops_datasheet: float | None = _f(MEASURE, "TFLOP/s", "the vendor's dense peak for this device and "
                                             "math (bench.measure.peak.DATASHEET), x ranks")
    mfu_datasheet: float | None = _f(MEASURE, doc="achieved over the datasheet peak",
                                     show=Display("MFU (datasheet)", better="max", main=False, **_PERCENT))
    scaling_efficiency_ci95: list | None = _f(MEASURE, doc="95% CI of scaling_efficiency [low, high]")
    # issue 19 D (nodes)
    nodes: int | None = _f(SETTING, doc="nodes the cell's ranks spanned (bench slurm submit --nodes); "
                           "absent in older records: 1 when world_size is 1, else unknown (None)")
    # issue 19 comms: --comm-steps profiled after the timing, rank 0's trace (bench.measure.comms)
    comm_steps: int | None = _f(PROVENANCE, "steps", "--comm-steps: steps profiled after the timing")
    comm_step_ms: float | None = _f(MEASURE, "ms", "mean profiled step (ProfilerStep windows, rank 0)")
    comm_ms: float | None = _f(MEASURE, "ms", "per profiled step: the union of the collectives' intervals",
                               Display("collective time", "ms", "min", main=False))
    comm_exposed_ms: float | None = _f(MEASURE, "ms", "per profiled step: collective time with no compute beside it",
                                       Display("exposed comm", "ms", "min", main=False))
    comm_exposed_share: float | None = _f(MEASURE, doc="comm_exposed_ms / comm_step_ms",
                                          show=Display("exposed comm share", better="min", **_PERCENT))
    comm_bytes: float | None = _f(MEASURE, "bytes", "collective payload per step as traced (nccl-tests' size)",
                                  Display("comm per step", "MB", scale=2.0**-20, main=False))
    comm_bytes_predicted: float | None = _f(MEASURE, "bytes", "payload per step predicted from the parameter count "
                                            "and engine (comm_prediction)",
                                            Display("comm per step (predicted)", "MB", scale=2.0**-20, main=False))
    comm_bytes_predicted_min: float | None = _f(MEASURE, "bytes", "ZeRO-3 / FSDP2: the lower bound of the predicted "
                                                "payload (comm_bytes_predicted is the upper); None: one value")
    comm_prediction: str | None = _f(PROVENANCE, doc="the formula and numbers behind comm_bytes_predicted")
    comm_busbw_gbps: float | None = _f(MEASURE, "GB/s (1e9 bytes)", "bus bandwidth, nccl-tests convention, "
                                       "combined over collective kinds by bytes",
                                       Display("bus bandwidth", "GB/s", "max", main=False))
    comm_collectives: list | None = _f(MEASURE, doc="per collective kind: count, bytes, time_ms, busbw_gbps per step")
    comm_method: str | None = _f(PROVENANCE, doc="how the comm_* figures were measured")
    comm_trace_dir: str | None = _f(PROVENANCE, doc="the per-rank Kineto traces of the comm steps")
    comm_error: str | None = _f(MEASURE, doc="why the comm steps' trace could not be read (flag comm-unmeasured)")
    # issue 19 A
    scaling_mode: str | None = _f(SETTING, doc="weak: --batch per rank; strong: --global-batch split over the ranks")
    # issue 30: deployed backends (bench.deploy), their costs beside the latency
    export_s: float | None = _f(MEASURE, "s", "torch.export (+ ONNX translation) of the deployed model",
                                Display("export time", "s", "min", main=False))
    build_s: float | None = _f(MEASURE, "s", "session creation / AOT compile / engine build (+ INT8 calibration)",
                               Display("build time", "s", "min", main=False))
    artifact_bytes: int | None = _f(MEASURE, "bytes", "what the deployment ships (.onnx, IR, .pt2)",
                                    Display("artifact size", "MB", "min", scale=2.0**-20, main=False))
    runtime_version: str | None = _f(PROVENANCE, doc="the runtime package and its version")
    runtime_providers: list | None = _f(PROVENANCE, doc="what actually ran the cell (ORT providers, OpenVINO "
                                        "execution devices); a fall-back is refused, flag provider-fallback")
    runtime_settings: dict | None = _f(PROVENANCE, doc="the runtime's threads / streams / precision as it reports them")
    calibration: dict | None = _f(PROVENANCE, doc="INT8: calibration images, batches, method, tool")
    export_error_op: str | None = _f(MEASURE, doc="export-failed: the op or line of model code the exporter blamed")
    # --- memory
    peak_mem_mb: float | None = _f(MEASURE, "MB", show=Display("peak memory", better="min", **_BOTH))
    peak_mem_method: str | None = _f(MEASURE)
    per_rank_peak_mem_mb: list | None = _f(MEASURE, "MB", "each rank's peak; peak_mem_mb is their maximum")
    mem_reserved_mb: float | None = _f(MEASURE, "MB", "GPU: torch.cuda.max_memory_reserved",
                                      Display("reserved memory", better="min"))
    device_mem_used_mb: float | None = _f(MEASURE, "MB", "GPU: NVML memory in use at the end of the cell",
                                         Display("device memory in use", main=False))
    energy_j_per_image: float | None = _f(MEASURE, "J", "GPU: NVML energy over warm-up + timed steps / images",
                                         Display("energy per image", better="min"))
    mem_breakdown_mb: dict | None = _f(MEASURE, "MB")
    compile_peak_mem_mb: float | None = _f(MEASURE, "MB", "--compile: the peak up to the end of the compile, "
                                           "kept out of peak_mem_mb", Display("compile peak memory", main=False))
    batch_search: list | None = _f(MEASURE)
    # --- profile
    op_breakdown: dict | None = _f(MEASURE, "fraction of profiled time")
    trace_file: str | None = _f(PROVENANCE)
    # --- fine-tunes
    data: str | None = _f(SETTING)
    steps: int | None = _f(SETTING)
    lr: float | None = _f(SETTING)
    weight_decay: float | None = _f(SETTING)
    optimizer: str | None = _f(SETTING)
    seed: int | None = _f(SETTING)
    fpn_channels: int | None = _f(SETTING)
    head_norm: str | None = _f(SETTING)
    bn_mode: str | None = _f(SETTING, doc="backbone BatchNorm: frozen | train | sync")
    pretrained: bool | None = _f(SETTING)
    checkpoint: str | None = _f(SETTING)
    num_classes: int | None = _f(MEASURE)
    class_names: list | None = _f(MEASURE)
    train_images: int | None = _f(SETTING)
    val_images: int | None = _f(SETTING)
    backbone_params: int | None = _f(MEASURE, "parameters")
    checkpoint_unused_keys: list | None = _f(MEASURE)
    frozen_unreached_params: list | None = _f(MEASURE)
    loss_curve: list | None = _f(MEASURE)
    loss_first: float | None = _f(MEASURE)
    loss_last: float | None = _f(MEASURE)
    loss_first_mean: float | None = _f(MEASURE)
    loss_last_mean: float | None = _f(MEASURE)
    loss_mean_window: int | None = _f(MEASURE, "steps")
    step_time_ms: float | None = _f(MEASURE, "ms", show=Display("step", "ms, median", main=False, **_TUNE))
    step_time_ms_p90: float | None = _f(MEASURE, "ms", show=Display("step p90", main=False, **_TUNE))
    data_time_ms: float | None = _f(MEASURE, "ms", show=Display("data loading", main=False, **_TUNE))
    map: float | None = _f(MEASURE, show=Display("mAP", better="max", **_PERCENT, **_TUNE))
    ap50: float | None = _f(MEASURE, show=Display("AP50", better="max", **_PERCENT, **_TUNE))
    ap75: float | None = _f(MEASURE, show=Display("AP75", better="max", **_PERCENT, **_TUNE))
    untrained_map: float | None = _f(MEASURE, show=Display("mAP untrained", **_PERCENT, **_TUNE))
    untrained_ap50: float | None = _f(MEASURE)
    untrained_ap75: float | None = _f(MEASURE)
    miou: float | None = _f(MEASURE, show=Display("mIoU", better="max", **_PERCENT, **_TUNE))
    pixel_acc: float | None = _f(MEASURE, show=Display("pixel acc.", better="max", **_PERCENT, **_TUNE))
    iou_per_class: list | None = _f(MEASURE)
    untrained_miou: float | None = _f(MEASURE, show=Display("mIoU untrained", **_PERCENT, **_TUNE))
    untrained_pixel_acc: float | None = _f(MEASURE)
    majority_miou: float | None = _f(MEASURE, show=Display("mIoU majority class", **_PERCENT, **_TUNE))
    majority_pixel_acc: float | None = _f(MEASURE)
    loadavg_1m_before: float | None = _f(PROVENANCE)
    loadavg_1m_after: float | None = _f(PROVENANCE)
    train_cpu_s: float | None = _f(PROVENANCE, "s")
    train_wall_s: float | None = _f(PROVENANCE, "s")
    # --- outcome
    status: str | None = _f(MEASURE, doc="ok | oom | error | export-failed | backend-unavailable")
    error: str | None = _f(MEASURE)
    traceback: str | None = _f(PROVENANCE)
    flags: list | None = _f(MEASURE, doc="what a reader must know (wide-ci, drift, few-samples, time-cap, ...)")
    # --- provenance
    run_id: str | None = _f(PROVENANCE)
    invocation: str | None = _f(PROVENANCE, doc="id of the line in invocations.jsonl")
    timestamp: str | None = _f(PROVENANCE, doc="ISO 8601 with microseconds")
    hostname: str | None = _f(PROVENANCE)
    loadavg_1m: float | None = _f(PROVENANCE)
    cpu_time_s: float | None = _f(PROVENANCE, "s")
    wall_s: float | None = _f(PROVENANCE, "s")


FIELDS = {f.name: f for f in fields(Record)}  # the dataclass fields of ``Record`` itself


@dataclass(frozen=True)
class FieldSpec:
    """One field of the schema, with its python type (read once from the annotations) and, for a
    measure the report shows, its ``Display``."""

    name: str
    kind: str
    unit: str
    doc: str
    type: type  # the declared type without None: int, float, str, bool, list, dict
    display: Display | None

    @property
    def header(self) -> str:
        """The column header: the label and its unit, "throughput (img/s)"."""
        assert self.display is not None
        unit = self.unit if self.display.unit is None else self.display.unit
        return f"{self.display.label} ({unit})" if unit else self.display.label

    @property
    def numeric(self) -> bool:
        """A column of numbers once loaded: a number type, or a list that stands for one number."""
        return self.type in (int, float) or (self.display is not None and self.display.scalar is not None)


def _plain_type(hint: Any) -> type:
    """``int | None`` -> int; ``list[str] | None`` -> list."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return typing.get_origin(hint) or hint


class Schema:
    """The fields of a record type, by name: what check_record, well_formed and the report read.
    Everything reads the current one through ``schema()``, so a field added to ``Record`` (or a
    test's subclass of it, installed as ``SCHEMA``) reaches every reader with no other change."""

    def __init__(self, record_type: type = Record):
        hints = typing.get_type_hints(record_type)
        self.record_type = record_type
        self.fields: dict[str, FieldSpec] = {
            f.name: FieldSpec(f.name, f.metadata["kind"], f.metadata["unit"], f.metadata["doc"],
                              _plain_type(hints[f.name]), f.metadata["display"])
            for f in fields(record_type)}

    def of_kind(self, kind: str) -> list[str]:
        return [n for n, f in self.fields.items() if f.kind == kind]

    def shown(self, section: str, main: bool) -> list[FieldSpec]:
        """The fields shown in ``section``'s main table (or its details table), its own ones first
        (in declaration order), then those it shares with another section."""
        out = [f for f in self.fields.values()
               if f.display is not None and section in f.display.sections and f.display.main == main]
        return sorted(out, key=lambda f: f.display.sections[0] != section)  # stable: declaration order

    @property
    def numeric(self) -> list[str]:
        return [n for n, f in self.fields.items() if f.numeric]

    @property
    def containers(self) -> set[str]:
        return {n for n, f in self.fields.items() if f.type in (list, dict)}


SCHEMA = Schema(Record)


def schema() -> Schema:
    """The schema every reader uses (a test may install a wider one as ``SCHEMA``)."""
    return SCHEMA


class SchemaError(ValueError):
    """A writer put a field in a record that ``Record`` does not declare."""


def check_record(rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` with ``schema_version``; raises SchemaError on a field the schema lacks."""
    unknown = sorted(set(rec) - schema().fields.keys())
    if unknown:
        raise SchemaError(f"record fields not in bench.record.Record: {', '.join(unknown)}")
    return {**rec, "schema_version": SCHEMA_VERSION}


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


def timestamp() -> str:
    """Local time with microseconds and offset: orders retries within one second. One clock
    read, so the seconds and the microseconds cannot come from two different seconds."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def new_run_id() -> str:
    """Unique even for two runs started in the same second on one host."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname().split('.')[0]}-{secrets.token_hex(3)}"


def default_run_dir() -> Path:
    """Where a run writes without ``--out``: ``results/<new run id>``. The one place it is spelled,
    for the local commands, the sweep and ``bench slurm submit``."""
    return Path("results") / new_run_id()


_WARNED: set[tuple[str, int]] = set()  # (run directory, lines skipped) already said


def writer_name() -> str | None:
    """The shard this process writes: None (records.jsonl) for a local run; one per SLURM job or
    array task, since O_APPEND is not atomic across NFS clients."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    return f"slurm-{job}-{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"


class RecordWriteError(OSError):
    """An append that could not be written whole (disk full, short write)."""


class RunDir:
    """A results directory that cells append to."""

    def __init__(self, path: str | os.PathLike, writer: str | None = None):
        self.path = Path(path)
        self.writer = writer  # None: records.jsonl; else this writer's own shard

    @property
    def records_path(self) -> Path:
        return self.path / (RECORDS if self.writer is None else f"records.{self.writer}.jsonl")

    def record_files(self) -> list[Path]:
        """records.jsonl and every writer's shard, in a stable order."""
        return [p for p in [self.path / RECORDS, *sorted(self.path.glob("records.*.jsonl"))]
                if p.name == RECORDS or not p.name.startswith("records.torn-")]

    def create(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def check_writable(self) -> None:
        """Refuse a records file, the invocation log or the claims folder that is a symlink or of
        the wrong kind, before measuring: bench writes (and deletes) only inside the run directory."""
        from bench.errors import BadInput

        files = [*self.record_files(), self.records_path, self.path / INVOCATIONS]
        for path, is_kind, kind in [*((f, Path.is_file, "file") for f in files),
                                    (self.path / "claims", Path.is_dir, "directory")]:
            if path.is_symlink():
                raise BadInput(f"{path} is a symlink; bench writes only inside the run directory "
                               "(remove it or choose another --out)")
            if path.exists() and not is_kind(path):
                raise BadInput(f"{path} exists but is not a {kind}; remove it or choose another --out")

    def append(self, record: dict[str, Any]) -> None:
        """Append one record whole or not at all: under an exclusive lock (concurrent writers of
        one file), cut a torn tail off, one checked write, fsync; on any failure the file is cut
        back to its length before the write."""
        line = (json.dumps(record, sort_keys=True, default=_json_default, allow_nan=False) + "\n").encode()
        path = self.records_path
        if path.is_symlink():
            raise RecordWriteError(errno.ELOOP, f"{path} is a symlink; refusing to follow it")
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
            self._quarantine_torn_tail(fd, path)
            start = os.fstat(fd).st_size
            failure: OSError | None = None
            try:
                written = os.write(fd, line)
                if written != len(line):
                    failure = OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
                else:
                    os.fsync(fd)
            except OSError as exc:
                failure = exc
            if failure is not None:
                try:
                    os.ftruncate(fd, start)  # take back a partial line so the file stays whole
                except OSError:
                    pass
                raise RecordWriteError(failure.errno or errno.EIO,
                                       f"cannot append to {path}: {failure.strerror or failure}")
        finally:
            os.close(fd)

    def _quarantine_torn_tail(self, fd: int, path: Path) -> None:
        """A last line without its newline (a kill mid-write) would swallow the next record:
        move its bytes to a side file and cut it off (the caller holds the file's lock)."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        # Find the last newline, reading backwards in blocks (the file may be large).
        cut, pos = 0, size
        while pos > 0:
            block = min(1 << 16, pos)
            pos -= block
            chunk = os.pread(fd, block, pos)
            i = chunk.rfind(b"\n")
            if i >= 0:
                cut = pos + i + 1
                break
        tail = os.pread(fd, size - cut, cut)
        side = self.path / f"records.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}.jsonl"
        side_fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            if os.write(side_fd, tail) != len(tail):
                raise OSError(errno.ENOSPC, f"short write while keeping the torn line in {side}")
            os.fsync(side_fd)
        finally:
            os.close(side_fd)
        os.ftruncate(fd, cut)
        os.fsync(fd)
        print(f"bench: {path} ended in a torn line ({size - cut} bytes); kept them in {side} and cut them off",
              file=sys.stderr)

    def records(self, warn: bool = True) -> list[dict[str, Any]]:
        """Every readable record of records.jsonl and the shards; unreadable lines are skipped
        with one warning that counts them (none when ``warn`` is False)."""
        out: list[dict[str, Any]] = []
        skipped = 0
        for path in self.record_files():
            recs, bad = read_records_counted(path)
            out += recs
            skipped += bad
        if skipped and warn and (str(self.path.resolve()), skipped) not in _WARNED:
            # Once per process: a command reads its directory several times (resume, report).
            _WARNED.add((str(self.path.resolve()), skipped))
            print(f"bench: skipped {skipped} unreadable or invalid record(s) in {self.path} (not JSON objects, "
                  "not UTF-8, or a field of the wrong type or value: see bench.record.valid)", file=sys.stderr)
        return out

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` atomically (temp file + rename)."""
        target = self.path / name
        tmp = target.with_suffix(target.suffix + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False))
        os.replace(tmp, target)
        return target

    def append_invocation(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, sort_keys=True, default=_json_default, allow_nan=False) + "\n").encode()
        fd = os.open(self.path / INVOCATIONS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            written = os.write(fd, line)
            if written != len(line):
                raise RecordWriteError(errno.ENOSPC, f"short write to {self.path / INVOCATIONS}")
            os.fsync(fd)
        finally:
            os.close(fd)


def read_records_counted(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """(the readable records of one file, upgraded; how many lines were unreadable)."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    out, bad = [], 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep, a 5000-digit number
                bad += 1
                continue
            if not isinstance(rec, dict):
                bad += 1
                continue
            rec = upgrade(rec)
            if not valid(rec):  # NaN latency, "fast" throughput, -3 iters: neither finished nor a figure
                bad += 1
                continue
            out.append(rec)
    return out, bad


def latest_by_cell(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (cell_key, config_id): the latest by timestamp (a retried cell's last try).
    A record whose cell_key is not a string (or config_id neither a string nor missing) stands alone."""
    best: dict[tuple, dict[str, Any]] = {}
    for i, rec in enumerate(records):
        cell_key, config_id = rec.get("cell_key"), rec.get("config_id")
        if isinstance(cell_key, str) and cell_key and (config_id is None or isinstance(config_id, str)):
            key: tuple = ("cell", cell_key, config_id)
        else:
            key = ("#", i)
        old = best.get(key)
        if old is None or str(rec.get("timestamp") or "") >= str(old.get("timestamp") or ""):
            best[key] = rec
    return list(best.values())


def cell_identity(rec: dict[str, Any]) -> tuple[str, str] | None:
    """(cell_key, config_id) of a record when both are strings (resume identity); else None."""
    key, config_id = rec.get("cell_key"), rec.get("config_id")
    return (key, config_id) if isinstance(key, str) and isinstance(config_id, str) else None


def well_formed(rec: dict[str, Any]) -> bool:
    """Every field the schema declares has its declared type (or is missing / null): what code
    that computes with old records (scaling efficiency, resume) may rely on. An int is a float
    (JSON writes 2.0 as 2); a bool is only a bool."""
    declared = schema().fields
    for name, value in rec.items():
        f = declared.get(name)
        if f is None or value is None:
            continue
        allowed = (int, float) if f.type is float else (f.type,)
        if isinstance(value, bool) and f.type is not bool:
            return False
        if not isinstance(value, allowed):
            return False
    return True


_NON_NEGATIVE_SUFFIXES = ("_ms", "_s", "_mb", "_gb", "iters", "params", "gmacs", "gflops", "throughput",
                          "images", "batch", "world_size", "threads", "count", "nodes")


def valid(rec: dict[str, Any]) -> bool:
    """A record bench may count as measured and show: ``well_formed`` (declared types), every
    top-level number finite, and times, sizes and counts not negative. Read-time validation of
    untrusted JSON; no schema library is a dependency, so this is written against ``Record``'s
    own declared types."""
    if not well_formed(rec):
        return False
    for name, value in rec.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if value < 0 and name.lower().endswith(_NON_NEGATIVE_SUFFIXES):
            return False
        if name in ("iters", "warmup_iters") and value > 1e15:
            return False
    return True


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (Path, tuple)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
