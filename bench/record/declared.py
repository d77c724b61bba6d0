"""The record schema, declared once: ``Record`` lists every field a record may hold with its kind,
unit and ``Display`` (how the report shows it); ``schema()`` is what readers go through;
``check_record`` refuses a field the schema lacks; ``valid`` is the read-time check of an untrusted
record against the declared types."""
from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable

SCHEMA_VERSION = 2
# The samples one record keeps: a record stays one JSON line, and every reader (compare, history,
# report, the index) holds at most this many per record, so the bootstraps' memory stays bounded
# whatever a file holds. ``bench run`` thins to it when writing, readers thin a longer (edited or
# foreign) list the same way when reading (bench.record.rundir), and set ``samples_thinned``.
MAX_KEPT_SAMPLES = 5000
# The longest step a sample may claim: --max-time's own bound (7 days), in ms. A sample above it, at
# or below 0, or not finite is not a measurement bench makes (an edited file), and would give a
# confident verdict from nothing ("ratio 0.000", 300-digit numbers).
MAX_STEP_MS = 7 * 86400 * 1e3
# --repeats' bound (bench.config): a record's repeat index lies in [0, MAX_REPEATS). The hierarchical
# bootstrap holds RESAMPLES x repeats values per cell, so a reader must not take more.
MAX_REPEATS = 1000
# bench run --repeats auto (bench.measure.auto_runs): the ceiling on the fresh processes one run
# measures (one repeat each), and --change's default, the change the run should be able to tell.
# Here, beside MAX_REPEATS, so that bench.config names them without importing the measuring code.
MAX_AUTO_RUNS = 20
AUTO_CHANGE = 0.10
# Counts a figure divides by or multiplies with (images per step = global_batch, or batch x world
# size): 0 would make a throughput of 0 ("slower"); a count beyond this is no machine's.
POSITIVE_COUNTS = ("batch", "global_batch", "world_size", "nodes")
MAX_COUNT = 1 << 31

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
    grad_comm_dtype: str | None = _f(SETTING, doc="DeepSpeed: the dtype ZeRO reduces gradients in (bench's config: "
                                                  "the weights', as DDP and FSDP2; '+' joins several)")
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
    first_step_peak_mem_mb: float | None = _f(MEASURE, "MB", "an eager cell: the peak up to the end of its untimed "
                                              "first step (cuDNN autotuning, first-use allocations), kept out of "
                                              "peak_mem_mb", Display("first-step peak memory", main=False))
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
    top-level number finite, and times, sizes and counts not negative; the counts a figure is
    derived from (``POSITIVE_COUNTS``) at least 1, the repeat index within --repeats' bound, and
    each latency sample a real step (``valid_samples``). Read-time validation of untrusted JSON;
    no schema library is a dependency, so this is written against ``Record``'s own declared types."""
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
        if name in POSITIVE_COUNTS and not 1 <= value <= MAX_COUNT:
            return False
        if name == "repeat" and not 0 <= value < MAX_REPEATS:
            return False
    return valid_samples(rec.get("latency_samples_ms"))


def valid_samples(samples: Any) -> bool:
    """Absent, or a list of step times each a real number in (0, ``MAX_STEP_MS``]: a sample list
    that is all 0, negative, 1e308 or holds a NaN is an edit, not a measurement, and would give a
    confident verdict from nothing."""
    if samples is None:
        return True
    return isinstance(samples, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= MAX_STEP_MS for x in samples)


def thinned(values: list[float], keep: int = MAX_KEPT_SAMPLES) -> list[float]:
    """``keep`` values spread evenly over ``values`` (first and last included), or all of them: the
    one thinning rule, for the writers (bench.measure.timing) and the readers (``read_records``)."""
    n = len(values)
    if n <= keep:
        return list(values)
    return [values[round(i * (n - 1) / (keep - 1))] for i in range(keep)]
