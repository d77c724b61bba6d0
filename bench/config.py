"""One configuration per command, built once from the command line (or a config file) and passed whole.

- ``RunConfig`` serves ``bench run`` and ``bench profile``; ``FinetuneConfig`` ``bench finetune``.
  ``bench slurm submit -- run ...`` validates the wrapped command with the same parser
  (``parse_command``) before anything reaches ``sbatch``.
- Options are declared once here (``run_params`` / ``finetune_params``); ``--config FILE``
  (YAML or JSON, keys = option names with ``_`` or ``-``) sets their defaults, and flags on the
  command line override it (click's ``default_map``).
- ``identity(cfg, cell, runtime)``: every setting that changes a measurement, derived from the
  dataclass fields themselves: a field is in it unless declared with ``meta(identity=False)``
  (the sweep axes, which are in the cell key, and settings such as ``--out``), so a setting added
  later joins resume identity without a second list to maintain. Fields marked ``scope="train"``
  leave inference cells' identity (an inference cell has ``engine: none`` whatever ``--engine``
  says).

Numbers are parsed strictly (ASCII decimal digits only; floats finite and in range): ``--res
64_0``, ``+64``, full-width digits and ``nan`` budgets are bad input, exit 2.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import click

from bench.errors import BadInput

MODES = ("infer", "train")
TASKS = ("cls", "det", "seg")
DTYPE_CHOICES = ("fp32", "bf16", "fp16", "bf16-weights")


def engine_choices() -> list[str]:
    """The registered engines (bench.engines registers one module per name)."""
    from bench.engines import engine_names

    return engine_names()
_DIGITS = re.compile(r"[0-9]+")
# A plain decimal number in ASCII: no "_" separators, no full-width digits, no nan/inf words.
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_DIGITS = 18  # integers below 10**18: beyond any real setting, and below int()'s 4300-digit limit
MAX_SIDE = 65536  # px: a larger side is a typo, and a range up to it stays a short list


def meta(identity: bool = True, scope: str = "all", unit: str = "") -> dict:
    """Field metadata: in resume identity or not; "train" = only train cells depend on it."""
    return {"identity": identity, "scope": scope, "unit": unit}


# --------------------------------------------------------------------------------------------
# Strict parsers (shared by every command)


def _shown(value: Any) -> str:
    """A bad value as an error message shows it: short, on one line, and never itself an error
    (a 5000-digit int cannot be turned into text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a very large integer"
    text = str(value).strip()
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:40])


def parse_int(text: str, what: str, minimum: int = 1) -> int:
    text = str(text).strip()
    if not _DIGITS.fullmatch(text) or len(text.lstrip("0")) > MAX_DIGITS or int(text) < minimum:
        raise BadInput(f"bad {what} '{_shown(text)}': give an integer >= {minimum} in ASCII digits")
    return int(text)


def parse_float(value: Any, what: str, minimum: float | None = None, min_open: bool = False,
                maximum: float | None = None) -> float:
    """A finite number: an int or float (from a config file), or text in ASCII decimal notation
    (``1``, ``0.5``, ``1e-4``); not ``1_000``, full-width digits, ``nan`` or ``inf``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadInput(f"bad {what} '{_shown(value)}': give a number")
    if isinstance(value, str):
        if len(value.strip()) > 64 or not _FLOAT.fullmatch(value.strip()):
            raise BadInput(f"bad {what} '{_shown(value)}': give a number in ASCII digits, e.g. 0.5 or 1e-4")
        number = float(value.strip())
    else:
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
    too_low = minimum is not None and (number <= minimum if min_open else number < minimum)
    if not math.isfinite(number) or too_low or (maximum is not None and number > maximum):
        bound = "" if minimum is None else f" {'>' if min_open else '>='} {minimum}"
        top = "" if maximum is None else f" and <= {maximum:g}"
        raise BadInput(f"bad {what} '{_shown(value)}': give a finite number{bound}{top}")
    return number


def parse_models(text: str | list) -> list[str]:
    from models import list_models

    items = text if isinstance(text, list) else str(text).split(",")
    names = [str(n).strip() for n in items if str(n).strip()]
    if not names:
        raise BadInput("--models is empty; give a comma-separated list, e.g. pvt_small,vit_s,resnet50")
    known = list_models()
    for n in names:
        if n not in known:
            raise BadInput(f"unknown model '{_shown(n)}'; known models: {', '.join(known)}")
    return list(dict.fromkeys(names))


def _side(text: str, item: str, multiple: int = 32) -> int:
    text = text.strip()
    if not _DIGITS.fullmatch(text) or len(text.lstrip("0")) > 6 or not 0 < int(text) <= MAX_SIDE \
            or int(text) % multiple:
        what = "a positive multiple of 32" if multiple == 32 else "a positive integer"
        raise BadInput(f"bad resolution '{_shown(item)}': each side must be {what} up to {MAX_SIDE} in ASCII digits "
                       "(e.g. 224, 512, 512x640, or a range 224:1024:64)")
    return int(text)


# Default sizes per task (height first): the paper's (mmdet's 1280x800 / 1333x800 written
# width-first; Semantic FPN at 512).
DEFAULT_RES = {"cls": "224", "det": "800x1333", "seg": "512"}
DEFAULT_FLOPS_RES = {"cls": "224", "det": "800x1280", "seg": "512"}


def parse_resolutions(text: str | list, multiple: int = 32) -> list[tuple[int, int]]:
    """'224,512x640,256:512:128' -> [(224, 224), (512, 640), (256, 256), (384, 384), (512, 512)].

    H x W, height first; a range START:STOP:STEP includes both ends. ``multiple=1`` for
    detection, whose images are padded to a multiple of 32 (``input_hw``) as mmdet does."""
    items = text if isinstance(text, list) else str(text).split(",")
    items = [str(t).strip() for t in items if str(t).strip()]
    if not items:
        raise BadInput("--res is empty; give sizes like 224,512,800 or HxW like 512x640")
    out: list[tuple[int, int]] = []
    for item in items:
        if ":" in item:
            parts = item.split(":")
            if len(parts) != 3:
                raise BadInput(f"bad resolution range '{_shown(item)}': give START:STOP:STEP, e.g. 224:1024:64")
            start, stop = _side(parts[0], item, multiple), _side(parts[1], item, multiple)
            step = parse_int(parts[2], f"resolution step in '{_shown(item)}'")
            if step % multiple or stop < start:
                raise BadInput(f"bad resolution range '{_shown(item)}': STEP a multiple of {multiple} and STOP >= START")
            out += [(s, s) for s in range(start, stop + 1, step)]
            continue
        sides = [_side(p, item, multiple) for p in item.lower().split("x")]
        if len(sides) not in (1, 2):
            raise BadInput(f"bad resolution '{_shown(item)}': give a size like 224 or HxW like 512x640")
        out.append((sides[0], sides[-1]))
    return list(dict.fromkeys(out))


def parse_batches(text: str | list, allow_auto: bool = True) -> list[int | str]:
    items = text if isinstance(text, list) else str(text).split(",")
    items = [str(t).strip() for t in items if str(t).strip()]
    out: list[int | str] = []
    for item in items:
        if item == "auto" and allow_auto:
            out.append("auto")
        elif not _DIGITS.fullmatch(item) or len(item.lstrip("0")) > MAX_DIGITS or int(item) <= 0:
            hint = " or 'auto'" if allow_auto else ""
            raise BadInput(f"bad batch size '{_shown(item)}': give positive integers{hint}, e.g. --batch 1,8")
        else:
            out.append(int(item))
    if not out:
        raise BadInput("--batch is empty; give positive integers, e.g. --batch 1,8")
    return list(dict.fromkeys(out))


def parse_modes(text: str | list) -> list[str]:
    items = text if isinstance(text, list) else str(text).split(",")
    modes = [str(m).strip() for m in items if str(m).strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise BadInput(f"bad mode '{_shown(bad[0] if bad else text)}'; choose from {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def file_digest(path: str | None) -> str | None:
    """A config file's content hash: two runs with the same path but other contents differ."""
    if not path:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# The configurations


@dataclass
class RunConfig:
    """``bench run`` / ``bench profile``: cells = models x res x modes x batches."""

    models: list[str] = field(default_factory=list, metadata=meta(identity=False))
    res: list[tuple[int, int]] = field(default_factory=lambda: [(224, 224)], metadata=meta(identity=False))
    modes: list[str] = field(default_factory=lambda: list(MODES), metadata=meta(identity=False))
    batches: list[int | str] = field(default_factory=lambda: [1], metadata=meta(identity=False))
    task: str = field(default="cls", metadata=meta())
    device: str = field(default="auto", metadata=meta(identity=False))  # the device *name* is in identity
    dtype: str = field(default="fp32", metadata=meta())
    tf32: bool = field(default=True, metadata=meta())
    cudnn_benchmark: bool = field(default=False, metadata=meta())
    channels_last: bool = field(default=False, metadata=meta())
    compile: bool = field(default=False, metadata=meta())
    budget: float = field(default=2.0, metadata=meta(unit="s"))
    max_time: float = field(default=20.0, metadata=meta(unit="s"))
    engine: str = field(default="none", metadata=meta(scope="train"))
    zero: int = field(default=0, metadata=meta(scope="train"))
    ds_config: str | None = field(default=None, metadata=meta(scope="train"))
    grad_clip: float = field(default=0.0, metadata=meta(scope="train"))
    profile: bool = field(default=False, metadata=meta())
    max_batch: int = field(default=1024, metadata=meta())
    time_auto_batch: bool = field(default=False, metadata=meta())
    threads: int | None = field(default=None, metadata=meta(identity=False))  # threads per rank: runtime
    nproc: int = field(default=1, metadata=meta(identity=False))  # world size: runtime
    timeout: float = field(default=300.0, metadata=meta(identity=False, unit="s"))
    out: str | None = field(default=None, metadata=meta(identity=False))
    no_report: bool = field(default=False, metadata=meta(identity=False))

    kind = "run"

    def validate(self) -> "RunConfig":
        if self.zero and self.engine != "deepspeed":
            raise BadInput(f"--zero {self.zero} needs --engine deepspeed")
        if self.engine == "none" and self.nproc > 1 and "train" in self.modes:
            raise BadInput("--nproc > 1 with --engine none would train a separate model per rank with no gradient "
                           "sync: use --engine ddp or --engine deepspeed (or --modes infer)")
        if self.max_time < self.budget:
            raise BadInput(f"--max-time {self.max_time:g} is below --budget {self.budget:g}: the cap must be >= the "
                           "soft timing budget")
        if self.ds_config:
            if not Path(self.ds_config).is_file():
                raise BadInput(f"DeepSpeed config not found: {self.ds_config}")
            from bench.engines.deepspeed import load_ds_config

            load_ds_config(self.ds_config)  # malformed JSON fails here, before anything runs
        if self.engine == "deepspeed" and "train" in self.modes:
            from bench.engines import TrainSpec
            from bench.engines.deepspeed import check_config

            micro = next((b for b in self.batches if isinstance(b, int)), 1)
            check_config(TrainSpec(engine="deepspeed", zero=self.zero, dtype=self.dtype, grad_clip=self.grad_clip,
                                   micro_batch=micro, ds_config=self.ds_config))
        return self


@dataclass
class FinetuneConfig:
    """``bench finetune``: cells = models x res, each a short RetinaNet / Semantic FPN fine-tune."""

    models: list[str] = field(default_factory=list, metadata=meta(identity=False))
    res: list[tuple[int, int]] = field(default_factory=lambda: [(512, 512)], metadata=meta(identity=False))
    task: str = field(default="seg", metadata=meta())
    data: str = field(default="synthetic", metadata=meta())
    steps: int = field(default=100, metadata=meta())
    batch: int = field(default=2, metadata=meta())
    lr: float = field(default=1e-4, metadata=meta())
    weight_decay: float = field(default=1e-4, metadata=meta())
    grad_clip: float = field(default=0.0, metadata=meta())
    dtype: str = field(default="fp32", metadata=meta())
    engine: str = field(default="none", metadata=meta())
    zero: int = field(default=0, metadata=meta())
    seed: int = field(default=0, metadata=meta())
    train_images: int | None = field(default=None, metadata=meta())
    val_images: int | None = field(default=None, metadata=meta())
    synthetic_classes: int = field(default=3, metadata=meta())
    fpn_channels: int = field(default=256, metadata=meta())
    head_norm: str = field(default="none", metadata=meta())
    bn_mode: str = field(default="auto", metadata=meta())
    checkpoints: dict[str, str] = field(default_factory=dict, metadata=meta(identity=False))  # per cell
    workers: int = field(default=0, metadata=meta(identity=False))
    nproc: int = field(default=1, metadata=meta(identity=False))
    out: str | None = field(default=None, metadata=meta(identity=False))

    kind = "finetune"

    def validate(self) -> "FinetuneConfig":
        from bench.data import parse_data_spec

        kind, where = parse_data_spec(self.data, self.task)
        if kind != "synthetic" and not Path(where).is_dir():
            raise BadInput(f"--data {self.data}: {where} is not a directory; give the data set's root")
        if self.nproc > 1 and self.engine == "none":
            raise BadInput("--nproc > 1 needs --engine ddp or --engine deepspeed")
        if self.zero and self.engine != "deepspeed":
            raise BadInput(f"--zero {self.zero} needs --engine deepspeed")
        if self.bn_mode == "sync" and self.engine != "ddp":
            raise BadInput("--bn-mode sync needs --engine ddp (SyncBatchNorm syncs across DDP ranks)")
        return self


def identity(cfg: RunConfig | FinetuneConfig, train: bool, runtime: dict[str, Any]) -> dict[str, Any]:
    """Every setting that makes two measurements comparable, as a flat dict (see module docstring).

    ``runtime``: facts of the process that ran it (world size, device name and count, threads per
    rank). A file-valued setting (``ds_config``) enters by its content hash."""
    out: dict[str, Any] = {"kind": cfg.kind}
    for f in fields(cfg):
        if not f.metadata.get("identity", True) or (f.metadata.get("scope") == "train" and not train):
            continue
        value = getattr(cfg, f.name)
        out[f.name] = file_digest(value) if f.name == "ds_config" else value
    if not train and "engine" in {f.name for f in fields(cfg)}:
        out["engine"] = "none"
    return {**out, **runtime}


def identity_id(ident: dict[str, Any]) -> str:
    """A short stable hash of an identity, stored in each record as ``config_id``."""
    blob = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Command-line options, declared once


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--config FILE``: its keys become the command's defaults; flags given on the line win."""
    if not value:
        return value
    path = Path(value)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read config file {value}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - yaml and json raise many types; all are one line here
        raise BadInput(f"malformed config file {value}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise BadInput(f"malformed config file {value}: expected a mapping of option names to values")
    names = {p.name: p for p in ctx.command.params if isinstance(p, click.Option)}
    aliases = {opt.lstrip("-").replace("-", "_"): p.name for p in names.values() for opt in p.opts}
    defaults = {}
    for key, val in data.items():
        name = aliases.get(str(key).replace("-", "_"))
        if name is None or name == "config":
            raise BadInput(f"config file {value}: unknown option '{key}'; options: "
                           + ", ".join(sorted(k for k in aliases if k != "config")))
        if isinstance(val, list) and not names[name].multiple:
            val = ",".join(str(v) for v in val)
        elif isinstance(val, dict) and names[name].multiple:
            val = [f"{k}={v}" for k, v in val.items()]
        defaults[name] = val
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def config_option() -> click.Option:
    return click.Option(["--config"], type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                        callback=_load_config_file,
                        help="YAML/JSON file of option values (keys = option names); flags override it.")


def run_params() -> list[click.Parameter]:
    """The options of ``bench run`` (and ``bench profile``), in --help order."""
    O = click.Option
    return [
        config_option(),
        O(["--models", "models_text"], required=True, help="Comma-separated, e.g. pvt_small,vit_s,resnet50."),
        O(["--task"], default="cls", show_default=True, type=click.Choice(TASKS),
          help="cls: the backbone as a classifier; det: RetinaNet + FPN; seg: Semantic FPN (the paper's set-ups)."),
        O(["--res", "res_text"], default=None,
          help="Sizes, height first: 224,512,800, 512x640 or a range 224:1024:64 (multiples of 32; det pads to "
               "32) [default: cls 224, det 800x1333, seg 512]."),
        O(["--batch", "batch_text"], default="1", show_default=True, help="Batch sizes per rank, or 'auto'."),
        O(["--modes", "modes_text"], default="infer,train", show_default=True, help="infer, train or both."),
        O(["--budget"], default="2", show_default=True, help="Soft target: seconds of timing per cell."),
        O(["--max-time"], default="20", show_default=True,
          help="Hard cap per cell in seconds, warm-up included."),
        O(["--device"], default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])),
        O(["--dtype"], default="fp32", show_default=True, type=click.Choice(DTYPE_CHOICES),
          help="bf16/fp16: autocast with fp32 weights (every engine); bf16-weights: the model cast to bf16."),
        O(["--tf32"], default="on", show_default=True, type=click.Choice(["on", "off"]),
          help="TF32 for fp32 convs and matmuls alike on CUDA (what people train with; timm's benchmark too)."),
        O(["--cudnn-benchmark"], is_flag=True, help="Let cuDNN pick conv algorithms by timing them (CUDA)."),
        O(["--channels-last"], is_flag=True, help="NHWC memory format for models and inputs."),
        O(["--compile", "use_compile"], is_flag=True, help="torch.compile the model (compile time recorded apart)."),
        O(["--engine"], default="none", show_default=True, type=click.Choice(engine_choices()), help="Training engine."),
        O(["--zero"], default=0, show_default=True, type=click.IntRange(0, 3), help="DeepSpeed ZeRO stage."),
        O(["--ds-config"], help="Your DeepSpeed JSON config (deep-merged over the generated one)."),
        O(["--grad-clip"], default="0", show_default=True, help="Gradient clipping for every engine (0 = off)."),
        O(["--nproc"], default="1", show_default=True, help="Ranks on this node (self-launch via torchrun)."),
        O(["--threads"], default=None, help="Intra-op threads per rank (default: allotted cores / ranks)."),
        O(["--profile"], is_flag=True, help="Record torch.profiler traces per cell into RUN_DIR/traces."),
        O(["--max-batch"], default="1024", show_default=True, help="Upper bound for --batch auto."),
        O(["--time-auto-batch"], is_flag=True,
          help="Also time the batch --batch auto finds (default: record the frontier only, one step per trial)."),
        O(["--timeout", "timeout_s"], default="300", show_default=True,
          help="Seconds before a stuck collective ends the job."),
        O(["--out", "out_dir"], default=None, help="Run directory (default results/<run-id>)."),
        O(["--no-report"], is_flag=True, help="Don't render RUN_DIR/report.html at the end."),
    ]


def run_config(params: dict[str, Any]) -> RunConfig:
    """Validated ``RunConfig`` from the parsed option values of ``run_params``."""
    p = params
    threads = None if p.get("threads") in (None, "") else parse_int(p["threads"], "--threads")
    task = p.get("task") or "cls"
    res_text = p["res_text"] if p.get("res_text") not in (None, "") else DEFAULT_RES[task]
    return RunConfig(
        models=parse_models(p["models_text"]), res=parse_resolutions(res_text, 1 if task == "det" else 32),
        modes=parse_modes(p["modes_text"]), batches=parse_batches(p["batch_text"]),
        task=task, device=p["device"], dtype=p["dtype"], tf32=p["tf32"] == "on",
        cudnn_benchmark=p["cudnn_benchmark"], channels_last=p["channels_last"], compile=p["use_compile"],
        budget=parse_float(p["budget"], "--budget", 0, min_open=True, maximum=86400),
        max_time=parse_float(p["max_time"], "--max-time", 0, min_open=True, maximum=7 * 86400),
        engine=p["engine"], zero=p["zero"], ds_config=p["ds_config"],
        grad_clip=parse_float(p["grad_clip"], "--grad-clip", 0), nproc=parse_int(p["nproc"], "--nproc"),
        threads=threads, profile=p["profile"], max_batch=parse_int(p["max_batch"], "--max-batch"),
        time_auto_batch=p["time_auto_batch"],
        timeout=parse_float(p["timeout_s"], "--timeout", 0, min_open=True, maximum=7 * 86400),
        out=p["out_dir"], no_report=p["no_report"],
    ).validate()


def finetune_params() -> list[click.Parameter]:
    O = click.Option
    return [
        config_option(),
        O(["--task"], type=click.Choice(["det", "seg"]), required=True, help="det: RetinaNet; seg: Semantic FPN."),
        O(["--models", "models_text"], default="pvt_small,vit_s,resnet50", show_default=True,
          help="Comma-separated backbones."),
        O(["--res", "res_text"], default="512", show_default=True, help="Sizes, e.g. 512 or 512x640 (multiples of 32)."),
        O(["--steps"], default="100", show_default=True),
        O(["--batch"], default="2", show_default=True, help="Images per step per rank."),
        O(["--data"], default="synthetic", show_default=True,
          help="synthetic | coco:DIR (annotations/instances_{train,val}2017.json, {train,val}2017/) | "
               "ade20k:DIR (images/ and annotations/{training,validation}/); layouts in bench/data/."),
        O(["--train-images"], default=None, help="Synthetic: scenes to train on (default 512); real data: the first N."),
        O(["--val-images"], default=None, help="Synthetic: scenes to score on (default 64); real data: the first N."),
        O(["--classes", "synthetic_classes"], type=click.IntRange(1, 4), default=3, show_default=True,
          help="Synthetic: object classes (shapes)."),
        O(["--checkpoint", "checkpoint_items"], multiple=True, metavar="MODEL=PATH",
          help="ImageNet weights for one backbone (official PVT .pth, timm .safetensors/.pth); repeatable."),
        O(["--fpn-channels"], default="256", show_default=True,
          help="FPN width (the paper's 256; Semantic FPN's head gets half). Narrower is for quick CPU runs."),
        O(["--head-norm"], type=click.Choice(["none", "gn"]), default="none", show_default=True,
          help="RetinaNet head: none = the paper's; gn = GroupNorm convs (torchvision's v2 head)."),
        O(["--bn-mode"], type=click.Choice(["auto", "frozen", "train", "sync"]), default="auto", show_default=True,
          help="Backbone BatchNorm: frozen statistics and affine (the paper's mmdet/mmseg baselines, which start "
               "from ImageNet weights), train, or sync (SyncBatchNorm, needs --engine ddp); auto = frozen with a "
               "--checkpoint, train from scratch (frozen random statistics would cripple the backbone)."),
        O(["--lr"], default="1e-4", show_default=True, help="AdamW learning rate (paper: 1e-4)."),
        O(["--weight-decay"], default="1e-4", show_default=True),
        O(["--grad-clip"], default="0", show_default=True, help="Max gradient norm; 0 = off."),
        O(["--engine"], type=click.Choice(engine_choices()), default="none", show_default=True),
        O(["--zero"], type=click.IntRange(0, 3), default=0, show_default=True, help="DeepSpeed ZeRO stage."),
        O(["--nproc"], default="1", show_default=True, help="Ranks on this node (re-launches under torchrun)."),
        O(["--dtype"], type=click.Choice(DTYPE_CHOICES), default="fp32", show_default=True),
        O(["--seed"], default="0", show_default=True),
        O(["--workers"], default="0", show_default=True, help="Data-loading processes per rank."),
        O(["--out"], default=None, help="Run directory (default results/<run-id>)."),
    ]


def parse_checkpoints(items: tuple[str, ...] | list[str], models: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = str(item).partition("=")
        if not sep or not name or not path:
            raise BadInput(f"bad --checkpoint '{item}': give MODEL=PATH, e.g. pvt_small=pvt_small.pth")
        if name not in models:
            raise BadInput(f"--checkpoint names '{name}', which is not in --models ({', '.join(models)})")
        if name in out:
            raise BadInput(f"two --checkpoint values for '{name}': give one per model")
        if not Path(path).is_file():
            raise BadInput(f"checkpoint not found: {path} (for {name}; give a local .pth/.safetensors file)")
        out[name] = path
    return out


def finetune_config(params: dict[str, Any]) -> FinetuneConfig:
    p = params
    models = parse_models(p["models_text"])
    optional = {k: None if p.get(k) in (None, "") else parse_int(p[k], "--" + k.replace("_", "-"))
                for k in ("train_images", "val_images")}
    return FinetuneConfig(
        models=models, res=parse_resolutions(p["res_text"]), task=p["task"], data=p["data"],
        steps=parse_int(p["steps"], "--steps"), batch=parse_int(p["batch"], "--batch"),
        lr=parse_float(p["lr"], "--lr", 0, min_open=True, maximum=10),
        weight_decay=parse_float(p["weight_decay"], "--weight-decay", 0, maximum=10),
        grad_clip=parse_float(p["grad_clip"], "--grad-clip", 0), dtype=p["dtype"], engine=p["engine"],
        zero=p["zero"], seed=parse_int(p["seed"], "--seed", minimum=0), **optional,
        synthetic_classes=p["synthetic_classes"], fpn_channels=parse_int(p["fpn_channels"], "--fpn-channels", 8),
        head_norm=p["head_norm"], bn_mode=p["bn_mode"], checkpoints=parse_checkpoints(p["checkpoint_items"], models),
        workers=parse_int(p["workers"], "--workers", minimum=0), nproc=parse_int(p["nproc"], "--nproc"),
        out=p["out"],
    ).validate()


# The commands whose options live here, and how each turns its options into a config.
COMMANDS = {
    "run": (run_params, run_config),
    "profile": (run_params, run_config),
    "finetune": (finetune_params, finetune_config),
}


def parse_command(argv: list[str]) -> tuple[str, RunConfig | FinetuneConfig, click.Context]:
    """``['run', '--models', ...]`` -> (name, validated config, click context): the one parser
    that ``bench slurm submit`` uses to check the command it wraps before ``sbatch``."""
    if not argv:
        raise BadInput("give the bench command after '--', e.g. bench slurm submit -- run --models resnet18 --res 224")
    name, rest = argv[0], list(argv[1:])
    if name not in COMMANDS:
        raise BadInput(f"bench slurm submit wraps one of {', '.join(COMMANDS)}, not '{name}'")
    params, build = COMMANDS[name]
    command = click.Command(name, params=params())
    try:
        ctx = command.make_context(f"bench {name}", rest)
    except click.ClickException as exc:
        raise BadInput(f"bench {name}: {exc.format_message()}") from None
    return name, build(ctx.params), ctx
