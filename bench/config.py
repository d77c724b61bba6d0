"""One configuration per command, built once from the command line (or a config file) and passed whole.

- ``RunConfig`` serves ``bench run`` and ``bench profile``; ``FinetuneConfig`` ``bench finetune``.
  ``bench slurm submit -- run ...`` validates the wrapped command with the same parser
  (``parse_command``) before anything reaches ``sbatch``.
- Each option is declared once, as a config field: ``option("--flag", default=..., parse=...,
  help=...)`` puts the flag, help, parser (with its bounds), default and identity role in the
  field's metadata; ``click_params`` generates the click options from the fields (--help order =
  field order) and ``build_config`` the config from their values. Adding a measuring setting is
  one field. ``--config FILE`` (YAML or JSON, keys = option names with ``_`` or ``-``) sets the
  defaults, and flags on the command line override it (click's ``default_map``); the file is read
  and checked in bench.config_files.
- ``identity(cfg, cell, runtime)``: every setting that changes a measurement, derived from the
  dataclass fields themselves: a field is in it unless declared with ``identity=False``
  (the sweep axes, which are in the cell key, and settings such as ``--out``), so a setting added
  later joins resume identity without a second list to maintain. Fields marked ``scope="train"``
  leave inference cells' identity (an inference cell has ``engine: none`` whatever ``--engine``
  says).

The config stays flat (not nested by concern as torchtitan's job config is): identity keys,
the invocation log (``asdict``) and every scenario read ``cfg.<name>``, and resume of existing run
directories needs the identity dict unchanged.

Numbers are parsed strictly (ASCII decimal digits only; floats finite and in range): ``--res
64_0``, ``+64``, full-width digits and ``nan`` budgets are bad input, exit 2.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import click

from bench.config_files import MAX_CONFIG_BYTES, MAX_CONFIG_EXPANDED, config_option  # noqa: F401 (re-exported: the file limits)
from bench.errors import BadInput
from bench.record import AUTO_CHANGE, MAX_REPEATS
from bench.record import MAX_AUTO_RUNS as AUTO_MAX_RUNS

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
# --threads: torch.set_num_threads takes a C int. Bounded by a constant, not by os.cpu_count(): bench slurm
# submit checks the command on a login node whose core count is not the compute node's. 4096 is over 5x the
# hardware threads of today's largest two-socket nodes (2 x 192 cores x 2 SMT = 768).
MAX_THREADS = 4096
MAX_SIDE = 65536  # px: a larger side is a typo, and a range up to it stays a short list


# --------------------------------------------------------------------------------------------
# Strict parsers (shared by every command)


def _shown(value: Any) -> str:
    """A bad value as an error message shows it (bench.sanitize.shown_value, shared with the
    config file loader)."""
    from bench.sanitize import shown_value

    return shown_value(value)


def parse_int(text: str, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    text = str(text).strip()
    if not _DIGITS.fullmatch(text) or len(text.lstrip("0")) > MAX_DIGITS or int(text) < minimum \
            or (maximum is not None and int(text) > maximum):
        bounds = f"from {minimum} to {maximum if maximum is not None else f'10^{MAX_DIGITS} - 1'}"  # the digit cap too
        raise BadInput(f"bad {what} '{_shown(text)}': give an integer {bounds} in ASCII digits")
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
    import sys

    from models.catalog import model_names  # the names alone: no torch, no timm yet

    items = text if isinstance(text, list) else str(text).split(",")
    names = [str(n).strip() for n in items if str(n).strip()]
    if not names:
        raise BadInput("--models is empty; give a comma-separated list, e.g. pvt_small,vit_s,resnet50")
    known = model_names()
    if any(n not in known for n in names) and "models.registry" in sys.modules:
        # a program that registered variants of its own (register_model) before calling bench's
        # entry: the registry, not the catalog, knows them
        from models import list_models

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
                raise BadInput(f"bad resolution range '{_shown(item)}': STEP a multiple of {multiple} "
                               "and STOP >= START")
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


def parse_nprocs(text: str | list | int) -> list[int]:
    """``--nproc``: one world size (today's ``--nproc N``) or a study's list, ``1,2,4``: each >= 1,
    no duplicates, kept in ascending order (the order the study runs them)."""
    items = text if isinstance(text, list) else [text] if isinstance(text, int) else str(text).split(",")
    items = [str(t).strip() for t in items]
    if not items or any(not t for t in items):
        raise BadInput(f"bad --nproc '{_shown(text)}': give a world size or a comma list, e.g. --nproc 1,2,4")
    sizes = [parse_int(t, "--nproc") for t in items]
    if len(set(sizes)) != len(sizes):
        raise BadInput(f"--nproc {_shown(text)} names a world size twice; give each once, e.g. --nproc 1,2,4")
    return sorted(sizes)


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


# --------------------------------------------------------------------------------------------
# Options declared once: a config field's metadata says how the command line gives it.
#
# A parser turns what click (or a --config file) hands over into the field's value. It sees the
# fields parsed before it (field order = --help order), so --res can follow --task and
# --checkpoint can check --models.

Parser = Callable[[Any, str, dict[str, Any]], Any]  # (raw value, the flag errors name, fields so far)


@dataclass(frozen=True)
class Int:
    """An integer in ASCII digits in [minimum, maximum]; ``optional``: empty means None."""

    minimum: int = 1
    maximum: int | None = None
    optional: bool = False

    def __call__(self, raw: Any, flag: str, parsed: dict[str, Any]) -> int | None:
        if self.optional and raw in (None, ""):
            return None
        return parse_int(raw, flag, self.minimum, self.maximum)


@dataclass(frozen=True)
class IntOrAuto(Int):
    """An ``Int``, or the word ``auto`` (``--repeats auto``)."""

    def __call__(self, raw: Any, flag: str, parsed: dict[str, Any]) -> int | str | None:
        if isinstance(raw, str) and raw.strip() == "auto":
            return "auto"
        try:
            return super().__call__(raw, flag, parsed)
        except BadInput as exc:
            raise BadInput(f"{exc.message}, or auto") from None


@dataclass(frozen=True)
class Float:
    """A finite number in bounds (``min_open``: strictly above ``minimum``)."""

    minimum: float | None = None
    min_open: bool = False
    maximum: float | None = None

    def __call__(self, raw: Any, flag: str, parsed: dict[str, Any]) -> float:
        return parse_float(raw, flag, self.minimum, min_open=self.min_open, maximum=self.maximum)


def _models(raw: Any, flag: str, parsed: dict[str, Any]) -> list[str]:
    return parse_models(raw)


def _modes(raw: Any, flag: str, parsed: dict[str, Any]) -> list[str]:
    return parse_modes(raw)


def _batches(raw: Any, flag: str, parsed: dict[str, Any]) -> list[int | str]:
    return parse_batches(raw)


def _nprocs(raw: Any, flag: str, parsed: dict[str, Any]) -> list[int]:
    return parse_nprocs(raw)


def _res_for_task(raw: Any, flag: str, parsed: dict[str, Any]) -> list[tuple[int, int]]:
    """``bench run --res``: the task's default size when not given; det sides need not be multiples of 32."""
    task = parsed.get("task") or "cls"
    return parse_resolutions(raw if raw not in (None, "") else DEFAULT_RES[task], 1 if task == "det" else 32)


def _res(raw: Any, flag: str, parsed: dict[str, Any]) -> list[tuple[int, int]]:
    return parse_resolutions(raw)


def _accuracy_data(raw: Any, flag: str, parsed: dict[str, Any]) -> str | None:
    """coco:DIR or ade20k:DIR for a det / seg run; its validation split is opened here, so a wrong
    directory stops the run before anything is created."""
    if raw in (None, ""):
        return None
    from bench.data import open_validation

    task = parsed.get("task", "cls")
    if task == "cls":
        raise BadInput(f"{flag} scores detections or label maps: use it with --task det or --task seg")
    open_validation(str(raw), task, 64, 64)
    return str(raw)


def _backends(raw: Any, flag: str, parsed: dict[str, Any]) -> list[str]:
    from bench.deploy.registry import parse_backends

    return parse_backends(raw)


def _on_off(raw: Any, flag: str, parsed: dict[str, Any]) -> bool:
    return raw == "on"


def _auto_on_off(raw: Any, flag: str, parsed: dict[str, Any]) -> bool | None:
    """auto (None: decided per device) | on | off; a --config file's true / false too (hence no click choice)."""
    if raw in (None, "auto"):
        return None
    if raw in (True, "on", "true", "True"):
        return True
    if raw in (False, "off", "false", "False"):
        return False
    raise BadInput(f"bad {flag} '{_shown(raw)}'; choose from auto, on, off")


def _checkpoints(raw: Any, flag: str, parsed: dict[str, Any]) -> dict[str, str]:
    return parse_checkpoints(raw or (), parsed.get("models", []))


def _run_data(raw: Any, flag: str, parsed: dict[str, Any]) -> str:
    """``bench run --data``: synthetic, or coco:DIR for det cells (the real-image FPS protocol)."""
    from bench.data import parse_data_spec

    raw = raw or "synthetic"
    kind, where = parse_data_spec(raw, parsed.get("task") or "cls")
    if kind != "synthetic" and (kind != "coco" or parsed.get("task") != "det"):
        raise BadInput(f"{flag} {raw}: bench run reads real images only for --task det, from coco:DIR")
    if kind != "synthetic" and not Path(where).is_dir():
        raise BadInput(f"{flag} {raw}: {where} is not a directory; give the data set's root")
    return raw


@dataclass(frozen=True)
class Option:
    """How one config field is given on the command line, and whether it is part of resume identity.

    ``default`` is written as a user types it (--help shows it; ``parse`` reads it); the field's
    own default is ``parse(default)``. ``identity=False``: the setting changes no measurement (or is
    in the cell key); ``scope="train"``: only training cells depend on it."""

    flags: tuple[str, ...]
    help: str | None = None
    default: Any = None
    parse: Parser | None = None  # None: click's value as it is (a choice, a flag)
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None  # a callable is asked late
    is_flag: bool = False
    multiple: bool = False
    required: bool = False
    metavar: str | None = None
    identity: bool = True
    scope: str = "all"
    by_content: bool = False  # a file path: identity holds the file's content hash, not the path
    unit: str = ""
    flag_value: str | None = None  # the value of the bare flag, for an option whose value is optional

    def to_click(self, name: str, default: Any = MISSING) -> click.Option:
        """The click option; ``default`` replaces the declared one (``bench profile``'s --modes)."""
        default = self.default if default is MISSING else default
        if self.is_flag:
            return click.Option([*self.flags, name], is_flag=True, default=bool(default), help=self.help)
        kind = None if self.choices is None else click.Choice(
            list(self.choices() if callable(self.choices) else self.choices))
        metavar = self.metavar
        if metavar is None and isinstance(self.parse, Int) and self.parse.maximum is not None:
            metavar = f"[{self.parse.minimum}-{self.parse.maximum}]"  # a short range, shown like a choice
        given = {} if default is None else {"default": default}  # click takes an explicit None as a value
        if self.flag_value is not None:
            given |= {"is_flag": False, "flag_value": self.flag_value}
        return click.Option([*self.flags, name], type=kind, show_default=default is not None and not self.multiple,
                            help=self.help, required=self.required, multiple=self.multiple, metavar=metavar,
                            **given)

    def value(self, raw: Any, parsed: dict[str, Any]) -> Any:
        """The field's value from the raw option value."""
        if self.is_flag:
            return bool(raw)
        if self.parse is None:
            return raw
        return self.parse(raw, self.flags[0], parsed)


_NO_VALUE: Any = object()


def option(*flags: str, default: Any = None, value: Any = _NO_VALUE, identity: bool = True, scope: str = "all",
           omit_none: bool = False, **how: Any) -> Any:
    """A config field declared with its option: flags, help, parser, default, identity.

    ``omit_none``: the field enters identity only when set (a setting added later leaves the
    identity of the runs made before it unchanged, so they still resume).

    ``value``: the field's default where ``parse(default)`` can't give it (a required option,
    a default that depends on another option, or one that would import the model registry)."""
    opt = Option(tuple(flags), default=default, identity=identity, scope=scope, **how)
    if value is _NO_VALUE:
        value = opt.value(tuple(default or ()) if opt.multiple else default, {})
    metadata = {"option": opt, "identity": identity, "scope": scope, "unit": opt.unit, "by_content": opt.by_content,
                "omit_none": omit_none}
    if isinstance(value, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(value), metadata=metadata)
    return field(default=value, metadata=metadata)


def zero_option(scope: str = "all") -> Any:
    """``--zero``, declared once for every command that trains (DeepSpeed's, refused under
    another engine by its EngineOption)."""
    return option("--zero", default="0", parse=Int(0, 3), scope=scope, help="DeepSpeed ZeRO stage.")


def options_of(cls: type) -> list[tuple[str, Option]]:
    """(field name, Option) of a config class, in field order = --help order."""
    return [(f.name, f.metadata["option"]) for f in fields(cls) if "option" in f.metadata]


def click_params(cls: type, defaults: dict[str, Any] | None = None) -> list[click.Parameter]:
    """The command's options, generated from the config class's fields (``--config`` first)."""
    defaults = defaults or {}
    return [config_option(), *(opt.to_click(name, defaults.get(name, MISSING)) for name, opt in options_of(cls))]


def build_config(cls: type, params: dict[str, Any]) -> Any:
    """A validated config from click's option values (keyed by field name); a missing key takes
    the option's declared default."""
    declared = dict(options_of(cls))
    unknown = set(params) - set(declared)
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {', '.join(sorted(unknown))}")
    parsed: dict[str, Any] = {}
    for name, opt in declared.items():
        parsed[name] = opt.value(params.get(name, opt.default), parsed)
    return cls(**parsed).validate()


# --------------------------------------------------------------------------------------------
# The configurations


@dataclass
class RunConfig:
    """``bench run`` / ``bench profile``: cells = models x res x modes x batches.

    Each field is one option (see ``option``), in --help order; the sweep axes (models, res,
    modes, batches), the runtime (threads, ranks) and where results go are not in identity."""

    models: list[str] = option("--models", required=True, parse=_models, value=[], identity=False,
                               help="Comma-separated, e.g. pvt_small,vit_s,resnet50.")
    task: str = option("--task", default="cls", choices=TASKS,
                       help="cls: the backbone as a classifier; det: RetinaNet + FPN; seg: Semantic FPN (the "
                            "paper's set-ups).")
    res: list[tuple[int, int]] = option(
        "--res", parse=_res_for_task, value=[(224, 224)], identity=False,
        help="Sizes, height first: 224,512,800, 512x640 or a range 224:1024:64 (multiples of 32; det pads to 32) "
             f"[default: {', '.join(f'{task} {size}' for task, size in DEFAULT_RES.items())}].")
    batches: list[int | str] = option("--batch", default="1", parse=_batches, identity=False,
                                      help="Batch sizes per rank, or 'auto'.")
    modes: list[str] = option("--modes", default="infer,train", parse=_modes, identity=False,
                              help="infer, train or both.")
    budget: float = option("--budget", default="2", parse=Float(0, min_open=True, maximum=86400), unit="s",
                           help="Soft target: seconds of timing per cell.")
    max_time: float = option("--max-time", default="90", parse=Float(0, min_open=True, maximum=7 * 86400), unit="s",
                             help="Hard cap per cell in seconds, warm-up included; its clock starts with the timing, "
                                  "after the set-up.")
    setup_timeout: float = option("--setup-timeout", default="900", parse=Float(0, min_open=True, maximum=7 * 86400),
                                  unit="s", identity=False,
                                  help="Limit on a cell's one-time set-up (build, engine, compile, first step, "
                                       "--batch auto search), which --max-time does not count; past it the cell is "
                                       "recorded with the flag setup-timeout and the sweep goes on.")
    repeats: int | str = option(
        "--repeats", default="1", parse=IntOrAuto(1, MAX_REPEATS), identity=False, metavar=f"[1-{MAX_REPEATS}|auto]",
        help="Visit every cell N times, in rounds (each round visits each cell once, in an order shuffled from "
             "--order-seed), so drift hits every model alike. auto: one repeat in each of as many fresh processes "
             "as --change needs on this machine's noise between runs (its calibration, else the first 3 runs'), "
             f"at most {AUTO_MAX_RUNS} (docs/comparisons.md).")
    change: float = option("--change", default=str(AUTO_CHANGE), parse=Float(0, min_open=True, maximum=10),
                           identity=False,
                           help="With --repeats auto: the change the run should be able to tell, as bench compare "
                                "--change (a fraction: 0.1 = 10%).")
    order_seed: int = option("--order-seed", default="0", parse=Int(0), identity=False,
                             help="Seed of the cell order in each round (with --repeats >= 2); recorded.")
    device: str = option("--device", default="auto", choices=("auto", "cpu", "cuda"),
                         identity=False)  # the device *name* is in identity (runtime)
    dtype: str = option("--dtype", default="fp32", choices=DTYPE_CHOICES,
                        help="bf16/fp16: autocast with fp32 weights (every engine); bf16-weights: the model cast "
                             "to bf16.")
    tf32: bool = option("--tf32", default="on", choices=("on", "off"), parse=_on_off,
                        help="TF32 for fp32 convs and matmuls alike on CUDA (what people train with; timm's "
                             "benchmark too).")
    cudnn_benchmark: bool | None = option(
        "--cudnn-benchmark", default="auto", metavar="[auto|on|off]", flag_value="on", parse=_auto_on_off,
        help="Let cuDNN pick conv algorithms by timing them; auto = on for CUDA (as timm's benchmark), off elsewhere; "
             "the bare flag = on. Recorded resolved.")
    channels_last: bool = option("--channels-last", is_flag=True, help="NHWC memory format for models and inputs.")
    compile: bool = option("--compile", is_flag=True,
                           help="torch.compile the model (compile time recorded apart).")
    backends: list[str] = option(  # a sweep axis (in the cell key), like --modes
        "--backend", default="eager", parse=_backends, identity=False,
        help="Inference backends side by side: eager, compile, aoti, onnxruntime, onnxruntime-int8, openvino, "
             "tensorrt (GPU); each cell's export and build costs and its agreement with fp32 eager are recorded "
             "(docs/deployed.md).")
    numerics: bool = option("--numerics", default="on", choices=("on", "off"), parse=_on_off, identity=False,
                            help="Check every cell whose math differs from fp32 eager (--dtype, --compile, "
                                 "--channels-last, TF32 on CUDA) against that reference on the same weights and "
                                 "input, outside the timing; recorded as agreement, flagged numerics-drift.")
    mfu: bool = option("--mfu", default="on", choices=("on", "off"), parse=_on_off, identity=False,
                       help="Measure the GEMM peak (before the first cell, again after each) for MFU; off saves "
                            "its 1-3 s per run and up to a second per cell on a CPU and leaves the measured peak "
                            "and MFU empty (achieved TFLOP/s and the datasheet MFU stay).")
    accuracy_data: str | None = option(
        "--accuracy-data", parse=_accuracy_data, identity=False,
        help="det / seg: also score --accuracy-images validation images of coco:DIR or ade20k:DIR against their "
             "labels, in the fp32 eager reference and in the cell's math mode (MLPerf's >= 99% of fp32 gate).")
    accuracy_images: int = option("--accuracy-images", default="16", parse=Int(1, 100000), identity=False,
                                  help="Validation images --accuracy-data scores (the first N).")
    engine: str = option("--engine", default="none", choices=engine_choices, scope="train", help="Training engine.")
    zero: int = zero_option(scope="train")
    ds_config: str | None = option("--ds-config", scope="train", by_content=True,
                                   help="Your DeepSpeed JSON config (deep-merged over the generated one).")
    grad_clip: float = option("--grad-clip", default="0", parse=Float(0), scope="train",
                              help="Gradient clipping for every engine (0 = off).")
    nproc: list[int] = option(  # world size: runtime
        "--nproc", default="1", parse=_nprocs, identity=False,
        help="Ranks on this node (self-launch via torchrun); a list 1,2,4 is a scaling study: each world size in "
             "turn, ascending, into one run directory, one report at the end.")
    threads: int | None = option("--threads", parse=Int(maximum=MAX_THREADS, optional=True), identity=False,  # runtime
                                 help="Intra-op threads per rank (default: allotted cores / ranks, so on a CPU "
                                      "every world size of a --nproc study uses the same cores in total; with "
                                      "--threads T every world size uses T per rank).")
    # issue 19 A: strong scaling. omit_none: a run without it keeps the resume identity it had before.
    global_batch: int | None = option(
        "--global-batch", parse=Int(optional=True), omit_none=True,
        help="Strong scaling: B images per step over all ranks, B / N per rank at world size N (refused where N "
             "does not divide B, and together with --batch). Without it --batch is per rank (weak scaling).")
    profile: bool = option("--profile", is_flag=True, help="Record torch.profiler traces per cell into RUN_DIR/traces.")
    max_batch: int = option("--max-batch", default="1024", parse=Int(), help="Upper bound for --batch auto.")
    time_auto_batch: bool = option("--time-auto-batch", is_flag=True,
                                   help="Also time the batch --batch auto finds (default: record the frontier only, "
                                        "one step per trial).")
    comm_steps: int = option("--comm-steps", default="3", parse=Int(0, 100), identity=False,
                             help="Multi-rank train cells: profile N extra steps after the timing for collective time, "
                                  "exposed communication, bytes against the engine's prediction and bus bandwidth "
                                  "(traces in RUN_DIR/traces/comm); 0 = off.")
    data: str = option("--data", default="synthetic", parse=_run_data, identity=False,  # adds fields, changes none
                       help="det: coco:DIR also times the mmdet / PVT-paper FPS protocol on its val images (own "
                            "aspect ratio, batch 1, padded to 32) beside the fixed-size latency.")
    timeout: float = option("--timeout", default="300", parse=Float(0, min_open=True, maximum=7 * 86400),
                            identity=False, unit="s", help="Seconds before a stuck collective ends the job.")
    out: str | None = option("--out", identity=False, help="Run directory (default results/<run-id>).")
    no_report: bool = option("--no-report", is_flag=True, identity=False,
                             help="Don't render RUN_DIR/report.html at the end.")

    kind = "run"

    def validate(self) -> "RunConfig":
        if self.max_time < self.budget:
            raise BadInput(f"--max-time {self.max_time:g} is below --budget {self.budget:g}: the cap must be >= the "
                           "soft timing budget")
        self._check_global_batch()
        if self.repeats == "auto" and len(self.nproc) > 1:
            raise BadInput(f"--repeats auto with --nproc {','.join(map(str, self.nproc))}: a scaling study runs each "
                           "world size once; give one world size, or a number of repeats (--repeats 3)")
        from bench.deploy.registry import validate_backends
        from bench.engines import validate_engine_settings

        validate_backends(self)  # what a deployed runtime refuses (bench.deploy.registry)

        validate_engine_settings(self)  # each engine's options and refusals (bench.engines.base)
        return self

    def _check_global_batch(self) -> None:
        """--global-batch must divide over every world size of --nproc (an explicit --batch beside
        it is refused by the command, which knows whether --batch was given)."""
        if self.global_batch is None:
            return
        bad = [n for n in self.nproc if self.global_batch % n]
        if bad:
            raise BadInput(f"--global-batch {self.global_batch} does not divide over {bad[0]} ranks (--nproc "
                           f"{','.join(map(str, self.nproc))}); give a multiple of every world size")

    def batches_for(self, world_size: int) -> list[int | str]:
        """The batches per rank at ``world_size``: --global-batch split over the ranks (strong
        scaling), else --batch as given (weak scaling: per rank)."""
        if self.global_batch is None:
            return self.batches
        if self.global_batch % world_size:
            raise BadInput(f"--global-batch {self.global_batch} does not divide over {world_size} ranks")
        return [self.global_batch // world_size]

    @property
    def scaling_mode(self) -> str:
        return "weak" if self.global_batch is None else "strong"


@dataclass
class FinetuneConfig:
    """``bench finetune``: cells = models x res, each a short RetinaNet / Semantic FPN fine-tune.

    Each field is one option (see ``option``), in --help order."""

    task: str = option("--task", choices=("det", "seg"), required=True, value="seg",
                       help="det: RetinaNet; seg: Semantic FPN.")
    models: list[str] = option("--models", default="pvt_small,vit_s,resnet50", parse=_models, value=[],
                               identity=False, help="Comma-separated backbones.")
    res: list[tuple[int, int]] = option("--res", default="512", parse=_res, identity=False,
                                        help="Sizes, e.g. 512 or 512x640 (multiples of 32).")
    steps: int = option("--steps", default="100", parse=Int())
    batch: int = option("--batch", default="2", parse=Int(), help="Images per step per rank.")
    data: str = option("--data", default="synthetic",
                       help="synthetic | coco:DIR (annotations/instances_{train,val}2017.json, {train,val}2017/) | "
                            "ade20k:DIR (images/ and annotations/{training,validation}/); layouts in bench/data/.")
    train_images: int | None = option("--train-images", parse=Int(optional=True),
                                      help="Synthetic: scenes to train on (default 512); real data: the first N.")
    val_images: int | None = option("--val-images", parse=Int(optional=True),
                                    help="Synthetic: scenes to score on (default 64); real data: the first N.")
    synthetic_classes: int = option("--classes", default="3", parse=Int(1, 4),
                                    help="Synthetic: object classes (shapes).")
    checkpoints: dict[str, str] = option(  # per cell, not a setting of the run
        "--checkpoint", multiple=True, metavar="MODEL=PATH", parse=_checkpoints, identity=False,
        help="ImageNet weights for one backbone (official PVT .pth, timm .safetensors/.pth); repeatable.")
    fpn_channels: int = option("--fpn-channels", default="256", parse=Int(8),
                               help="FPN width (the paper's 256; Semantic FPN's head gets half). Narrower is for "
                                    "quick CPU runs.")
    head_norm: str = option("--head-norm", default="none", choices=("none", "gn"),
                            help="RetinaNet head: none = the paper's; gn = GroupNorm convs (torchvision's v2 head).")
    bn_mode: str = option("--bn-mode", default="auto", choices=("auto", "frozen", "train", "sync"),
                          help="Backbone BatchNorm: frozen statistics and affine (the paper's mmdet/mmseg baselines, "
                               "which start from ImageNet weights), train, or sync (SyncBatchNorm, needs --engine "
                               "ddp); auto = frozen with a --checkpoint, train from scratch (frozen random "
                               "statistics would cripple the backbone).")
    lr: float = option("--lr", default="1e-4", parse=Float(0, min_open=True, maximum=10),
                       help="AdamW learning rate (paper: 1e-4).")
    weight_decay: float = option("--weight-decay", default="1e-4", parse=Float(0, maximum=10))
    grad_clip: float = option("--grad-clip", default="0", parse=Float(0), help="Max gradient norm; 0 = off.")
    engine: str = option("--engine", default="none", choices=engine_choices)
    zero: int = zero_option()
    nproc: int = option("--nproc", default="1", parse=Int(), identity=False,
                        help="Ranks on this node (re-launches under torchrun).")
    dtype: str = option("--dtype", default="fp32", choices=DTYPE_CHOICES)
    seed: int = option("--seed", default="0", parse=Int(0))
    workers: int = option("--workers", default="0", parse=Int(0), identity=False,
                          help="Data-loading processes per rank.")
    out: str | None = option("--out", identity=False, help="Run directory (default results/<run-id>).")

    kind = "finetune"

    def validate(self) -> "FinetuneConfig":
        from bench.data import parse_data_spec

        kind, where = parse_data_spec(self.data, self.task)
        if kind != "synthetic" and not Path(where).is_dir():
            raise BadInput(f"--data {self.data}: {where} is not a directory; give the data set's root")
        from bench.engines import validate_engine_settings

        validate_engine_settings(self)  # each engine's options and refusals (bench.engines.base)
        return self


def identity(cfg: RunConfig | FinetuneConfig, train: bool, runtime: dict[str, Any]) -> dict[str, Any]:
    """Every setting that makes two measurements comparable, as a flat dict (see module docstring).

    ``runtime``: facts of the process that ran it (world size, device name and count, threads per
    rank). A file-valued setting (``by_content``, e.g. ``ds_config``) enters by its content hash."""
    out: dict[str, Any] = {"kind": cfg.kind}
    for f in fields(cfg):
        if not f.metadata.get("identity", True) or (f.metadata.get("scope") == "train" and not train):
            continue
        value = getattr(cfg, f.name)
        if value is None and f.metadata.get("omit_none"):
            continue
        out[f.name] = file_digest(value) if f.metadata.get("by_content") else value
    if out.get("cudnn_benchmark", False) is None:  # auto: what this process runs with; "auto" without a runtime
        out["cudnn_benchmark"] = cudnn_benchmark_on(cfg) if runtime else "auto"
    if not train and "engine" in {f.name for f in fields(cfg)}:
        out["engine"] = "none"
    return {**out, **runtime}


def cudnn_benchmark_on(cfg: RunConfig) -> bool:
    """``--cudnn-benchmark`` resolved: auto is on where the run's device is CUDA (``--device``, or
    auto = CUDA when available, as bench.launch.context decides), off elsewhere."""
    if cfg.cudnn_benchmark is not None:
        return cfg.cudnn_benchmark
    if cfg.device != "auto":
        return cfg.device == "cuda"
    import torch

    return torch.cuda.is_available()


def identity_id(ident: dict[str, Any]) -> str:
    """A short stable hash of an identity, stored in each record as ``config_id``."""
    blob = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Command-line options, declared once


def run_params() -> list[click.Parameter]:
    """The options of ``bench run``, generated from ``RunConfig``'s fields."""
    return click_params(RunConfig)


def profile_params() -> list[click.Parameter]:
    """``bench profile``: ``bench run``'s options, tracing on and inference cells unless --modes says otherwise."""
    return click_params(RunConfig, {"modes": "infer", "profile": True})


def run_config(params: dict[str, Any]) -> RunConfig:
    """Validated ``RunConfig`` from the parsed option values of ``run_params``."""
    return build_config(RunConfig, params)


def finetune_params() -> list[click.Parameter]:
    """The options of ``bench finetune``, generated from ``FinetuneConfig``'s fields."""
    return click_params(FinetuneConfig)


def finetune_config(params: dict[str, Any]) -> FinetuneConfig:
    """Validated ``FinetuneConfig`` from the parsed option values of ``finetune_params``."""
    return build_config(FinetuneConfig, params)


# The commands whose options live here, and how each turns its options into a config.
COMMANDS = {
    "run": (run_params, run_config),
    "profile": (profile_params, run_config),
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
