"""bench.config: each option declared once, and resume identity unchanged by how options are declared.

The pinned identities below were computed with the config.py that declared each option three times
(click option, dataclass field, parsing line). Run directories written then must still resume, so
the same command line must give the same identity dict and the same ``config_id`` hash today.
"""
from __future__ import annotations

import dataclasses

import click
import pytest

from bench.config import (
    DEFAULT_RES,
    FinetuneConfig,
    Float,
    Int,
    RunConfig,
    build_config,
    click_params,
    identity,
    identity_id,
    option,
    options_of,
    parse_command,
    run_config,
)
from bench.errors import BadInput

RUNTIME = {"world_size": 2, "device_name": "cpu-x", "device_count": 1, "threads": 4}

RUN_FULL = ["run", "--models", "resnet18,pvt_tiny", "--res", "64,64x96,128:256:64", "--batch", "1,auto",
            "--modes", "train", "--budget", "0.5", "--max-time", "9", "--device", "cpu", "--dtype", "bf16",
            "--tf32", "off", "--cudnn-benchmark", "--channels-last", "--compile", "--engine", "ddp",
            "--grad-clip", "1.5", "--nproc", "2", "--threads", "3", "--profile", "--max-batch", "64",
            "--time-auto-batch", "--timeout", "60", "--no-report"]
FT_FULL = ["finetune", "--task", "det", "--models", "resnet18", "--res", "64x96", "--steps", "5", "--batch", "3",
           "--train-images", "10", "--val-images", "4", "--classes", "2", "--fpn-channels", "32",
           "--head-norm", "gn", "--bn-mode", "train", "--lr", "0.01", "--weight-decay", "0", "--grad-clip", "1",
           "--dtype", "bf16", "--seed", "3", "--workers", "1"]

RUN_FULL_TRAIN = {
    "kind": "run", "task": "cls", "dtype": "bf16", "tf32": False, "cudnn_benchmark": True, "channels_last": True,
    "compile": True, "budget": 0.5, "max_time": 9.0, "engine": "ddp", "zero": 0, "ds_config": None,
    "grad_clip": 1.5, "profile": True, "max_batch": 64, "time_auto_batch": True, **RUNTIME,
}
FT_FULL_IDENT = {
    "kind": "finetune", "task": "det", "data": "synthetic", "steps": 5, "batch": 3, "lr": 0.01,
    "weight_decay": 0.0, "grad_clip": 1.0, "dtype": "bf16", "engine": "none", "zero": 0, "seed": 3,
    "train_images": 10, "val_images": 4, "synthetic_classes": 2, "fpn_channels": 32, "head_norm": "gn",
    "bn_mode": "train",
}


def _ident(argv, train, runtime):
    _, cfg, _ = parse_command(argv)
    ident = identity(cfg, train, runtime)
    return ident, identity_id(ident)


def test_identity_pinned_for_a_run_with_every_option(tmp_path):
    ident, cid = _ident([*RUN_FULL, "--out", str(tmp_path / "o")], True, RUNTIME)
    assert ident == RUN_FULL_TRAIN and cid == "945b943548e173ca"
    ident, cid = _ident([*RUN_FULL, "--out", str(tmp_path / "o")], False, RUNTIME)
    infer = {k: v for k, v in RUN_FULL_TRAIN.items() if k not in ("zero", "ds_config", "grad_clip")}
    assert ident == {**infer, "engine": "none"} and cid == "f040cf7e128ee713"
    assert _ident([*RUN_FULL, "--out", str(tmp_path / "o")], True, {})[1] == "c06003e56457b686"


def test_identity_pinned_for_defaults(monkeypatch):
    # issue 16 raised the default --max-time from 20 s to 90 s: runs with the old cap keep their
    # hashes (so they resume), the new default is a new measuring configuration
    # issue 17: --cudnn-benchmark defaults to auto (on for CUDA). With a runtime, identity holds the
    # resolved value: on a CPU that is False, as before, so config ids (resume) keep their pins. The
    # settings id (no runtime, so no device) holds "auto": it changed (was e57faee113edc884 and
    # 276ca41a235f0077), since the same settings now measure with cuDNN autotuning on a GPU.
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # --device auto resolves to the CPU
    old_cap = ["--max-time", "20"]
    assert _ident(["run", "--models", "resnet18", *old_cap], True, RUNTIME)[1] == "0fc54c6370a224e7"
    assert _ident(["run", "--models", "resnet18", *old_cap], False, RUNTIME)[1] == "976e627289f9062f"
    assert _ident(["run", "--models", "resnet18", *old_cap], True, {})[1] == "5902a66cb39821ca"
    assert _ident(["run", "--models", "resnet18"], True, RUNTIME)[1] == "be4489d91c64f3e1"
    assert _ident(["run", "--models", "resnet18"], False, RUNTIME)[1] == "ad3d70aab6558a0d"
    assert _ident(["run", "--models", "resnet18"], True, {})[1] == "65532a80a803d35e"
    # --task, --res and --models are cell axes (or in the cell key): the settings hash is the same
    assert _ident(["run", "--models", "vit_t", "--res", "64"], True, {})[1] == "65532a80a803d35e"
    # --repeats and --order-seed decide how often and in what order, not how a cell is measured
    assert _ident(["run", "--models", "resnet18", "--repeats", "5", "--order-seed", "3"], True, {})[1] \
        == "65532a80a803d35e"
    # explicit off is the old default: its settings id is the old one
    assert _ident(["run", "--models", "resnet18", "--cudnn-benchmark", "off"], True, {})[1] == "276ca41a235f0077"


def test_cudnn_benchmark_auto_is_on_for_cuda_only(monkeypatch):
    """timm's benchmark autotunes convs: bench run does too on CUDA unless told off."""
    from bench.config import cudnn_benchmark_on

    def cfg(*extra):
        return parse_command(["run", "--models", "resnet18", *extra])[1]

    assert cfg().cudnn_benchmark is None and cfg("--cudnn-benchmark").cudnn_benchmark is True
    assert cfg("--cudnn-benchmark", "off").cudnn_benchmark is False
    assert cfg("--cudnn-benchmark", "on", "--channels-last").cudnn_benchmark is True
    assert cudnn_benchmark_on(cfg("--device", "cuda")) is True and cudnn_benchmark_on(cfg("--device", "cpu")) is False
    assert cudnn_benchmark_on(cfg("--device", "cuda", "--cudnn-benchmark", "off")) is False
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert cudnn_benchmark_on(cfg()) is True
    assert identity(cfg(), True, RUNTIME)["cudnn_benchmark"] is True and identity(cfg(), True, {})[
        "cudnn_benchmark"] == "auto"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert cudnn_benchmark_on(cfg()) is False and identity(cfg(), True, RUNTIME)["cudnn_benchmark"] is False
    with pytest.raises(BadInput):
        parse_command(["run", "--models", "resnet18", "--cudnn-benchmark", "maybe"])


def test_identity_pinned_for_deepspeed_with_a_config_file(tmp_path, monkeypatch):
    """A file-valued setting enters identity by its content hash, not its path."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # --cudnn-benchmark auto resolves off
    ds = tmp_path / "ds.json"
    ds.write_text('{"gradient_clipping": 1.0}')
    argv = ["run", "--models", "resnet18", "--modes", "train", "--engine", "deepspeed", "--zero", "2",
            "--ds-config", str(ds), "--max-time", "20"]
    ident, cid = _ident(argv, True, {})
    # issue 17: the settings id (no runtime) holds --cudnn-benchmark auto (was de891f14dd5684f5)
    assert ident["ds_config"] == "b2e391694621b038" and ident["zero"] == 2 and cid == "907e294f0f24867e"
    assert _ident(argv, True, RUNTIME)[1] == "c3b45c3f5fb7e441"
    assert _ident(argv, False, RUNTIME)[1] == "976e627289f9062f"  # inference: engine none, like the default


def test_identity_pinned_for_a_finetune(tmp_path):
    ck = tmp_path / "r18.pth"
    ck.write_text("x")
    argv = [*FT_FULL, "--checkpoint", f"resnet18={ck}", "--out", str(tmp_path / "x")]
    ident, cid = _ident(argv, True, {})
    assert ident == FT_FULL_IDENT and cid == "b8de40f6313f4b78"
    for train in (True, False):  # a fine-tune has no scope="train" fields
        assert _ident(argv, train, RUNTIME)[1] == "dd8a95a5d9b3db29"


@pytest.mark.parametrize("argv", [RUN_FULL, FT_FULL])
def test_settings_outside_identity_do_not_change_it(argv, tmp_path):
    base = _ident(argv, True, RUNTIME)
    other = [*argv, "--out", str(tmp_path / "elsewhere"), "--nproc", "1"]
    if argv[0] == "run":
        other += ["--threads", "1"]
    else:
        other += ["--workers", "3"]
    assert _ident(other, True, RUNTIME) == base


# ------------------------------------------------------------------------------------ one declaration per option

def _command(cls, argv, defaults=None):
    """Parse ``argv`` with the click command generated from ``cls`` and build the config."""
    command = click.Command("x", params=click_params(cls, defaults))
    ctx = command.make_context("x", list(argv))
    return build_config(cls, ctx.params)


def _with_warmup(**how):
    """RunConfig plus one measuring setting, declared as one field and nothing else."""
    spec = option("--warmup", default="0.5", parse=Float(0, maximum=60), help="Seconds of warm-up.", **how)
    return dataclasses.make_dataclass("WarmupConfig", [("warmup", float, spec)], bases=(RunConfig,))


def test_a_new_measuring_setting_is_one_field(tmp_path):
    cls = _with_warmup(unit="s")
    cfg = _command(cls, ["--models", "resnet18", "--warmup", "1.5"])
    assert cfg.warmup == 1.5 and cfg.models == ["resnet18"]
    assert cls(models=["resnet18"]).warmup == 0.5  # the field's default is the option's, parsed
    ident = identity(cfg, True, RUNTIME)
    assert ident["warmup"] == 1.5 and identity(cfg, False, RUNTIME)["warmup"] == 1.5
    default = _command(cls, ["--models", "resnet18"])
    assert identity_id(identity(default, True, RUNTIME)) != identity_id(ident)
    # the old settings are untouched by the new field: only the new key differs
    base = identity(_command(RunConfig, ["--models", "resnet18"]), True, RUNTIME)
    assert identity(default, True, RUNTIME) == {**base, "warmup": 0.5}
    # its parser's bounds hold, as one line
    with pytest.raises(BadInput, match=r"^bad --warmup 'nan'"):
        _command(cls, ["--models", "resnet18", "--warmup", "nan"])
    with pytest.raises(BadInput, match=r"^bad --warmup '61': give a finite number >= 0 and <= 60$"):
        _command(cls, ["--models", "resnet18", "--warmup", "61"])
    # --help shows it, with its default, after the others; a --config file may set it
    help_text = click.Command("x", params=click_params(cls)).get_help(click.Context(click.Command("x")))
    assert "--warmup TEXT" in help_text and "Seconds of warm-up.  [default: 0.5]" in help_text
    assert help_text.index("--no-report") < help_text.index("--warmup")
    conf = tmp_path / "c.yaml"
    conf.write_text("models: resnet18\nwarmup: 2\n")
    assert _command(cls, ["--config", str(conf)]).warmup == 2.0


def test_a_new_setting_can_opt_out_of_identity_or_of_inference_cells():
    outside = _command(_with_warmup(identity=False), ["--models", "resnet18", "--warmup", "3"])
    assert outside.warmup == 3.0 and "warmup" not in identity(outside, True, RUNTIME)
    train_only = _command(_with_warmup(scope="train"), ["--models", "resnet18", "--warmup", "3"])
    assert identity(train_only, True, RUNTIME)["warmup"] == 3.0
    assert "warmup" not in identity(train_only, False, RUNTIME)


@pytest.mark.parametrize("cls", [RunConfig, FinetuneConfig])
def test_every_field_is_an_option_in_field_order(cls):
    names = [f.name for f in dataclasses.fields(cls)]
    assert [name for name, _ in options_of(cls)] == names
    params = click_params(cls)
    assert params[0].name == "config" and [p.name for p in params[1:]] == names
    help_text = click.Command("x", params=params).get_help(click.Context(click.Command("x")))
    places = [help_text.index(f"  {opt.flags[0]} ") for _, opt in options_of(cls)]
    assert places == sorted(places)  # --help lists them in field order


def test_field_defaults_are_the_command_line_defaults():
    """The dataclass built in code and the one the command line builds with no options agree."""
    _, cfg, _ = parse_command(["run", "--models", "resnet18"])
    assert cfg == RunConfig(models=["resnet18"])
    _, cfg, _ = parse_command(["finetune", "--task", "seg"])
    assert cfg == FinetuneConfig(models=["pvt_small", "vit_s", "resnet50"], task="seg")


def test_profile_defaults_to_traced_inference_cells():
    _, cfg, _ = parse_command(["profile", "--models", "resnet18"])
    assert cfg.profile and cfg.modes == ["infer"]
    _, cfg, _ = parse_command(["profile", "--models", "resnet18", "--modes", "train"])
    assert cfg.profile and cfg.modes == ["train"]
    _, run, _ = parse_command(["run", "--models", "resnet18", "--profile", "--modes", "infer"])
    assert identity(cfg, False, {}) == identity(run, False, {})


def test_default_res_follows_the_task():
    for task, size in DEFAULT_RES.items():
        _, cfg, _ = parse_command(["run", "--models", "resnet18", "--task", task])
        h, _, w = size.partition("x")
        assert cfg.res == [(int(h), int(w or h))]
    _, cfg, _ = parse_command(["run", "--models", "resnet18", "--task", "det", "--res", "100x130"])
    assert cfg.res == [(100, 130)]  # det pads itself: any side
    with pytest.raises(BadInput, match="bad resolution '100x130'"):
        parse_command(["run", "--models", "resnet18", "--task", "seg", "--res", "100x130"])


def test_build_config_refuses_a_value_for_no_option():
    with pytest.raises(TypeError, match="modes_text"):
        run_config({"models": "resnet18", "modes_text": "infer"})
    assert run_config({"models": "resnet18"}) == RunConfig(models=["resnet18"])  # the rest: declared defaults


def _numeric_options():
    for cls, base in ((RunConfig, ["run", "--models", "resnet18"]), (FinetuneConfig, ["finetune", "--task", "seg"])):
        for name, opt in options_of(cls):
            if isinstance(opt.parse, (Int, Float)):
                yield pytest.param(base, opt.flags[0], id=f"{cls.kind}-{name}")


@pytest.mark.parametrize("base, flag", list(_numeric_options()))
@pytest.mark.parametrize("text", ["nan", "inf", "1_0", "\uff11", "0x1", "1,5", "9" * 400])
def test_every_number_option_is_strict(base, flag, text):
    """Each declared number option refuses look-alikes, as one line naming the flag."""
    with pytest.raises(BadInput) as info:
        parse_command([*base, flag, text])
    message = info.value.format_message()
    assert len(message.splitlines()) == 1 and message.startswith(f"bad {flag} ")


@pytest.mark.parametrize("argv, message", [
    (["run", "--models", "resnet18", "--zero", "4"], "bad --zero '4': give an integer from 0 to 3 in ASCII digits"),
    (["run", "--models", "resnet18", "--zero", "\uff12"], "bad --zero '\uff12'"),  # click's int() took it
    (["finetune", "--task", "seg", "--classes", "5"], "bad --classes '5': give an integer from 1 to 4"),
    (["finetune", "--task", "seg", "--classes", "0"], "bad --classes '0'"),
])
def test_bounded_integers_are_strict_too(argv, message):
    with pytest.raises(BadInput) as info:
        parse_command(argv)
    assert info.value.format_message().startswith(message)


def test_bounded_integers_show_their_range_in_help():
    help_text = click.Command("x", params=click_params(RunConfig)).get_help(click.Context(click.Command("x")))
    assert "--zero [0-3]" in help_text
    _, cfg, _ = parse_command(["run", "--models", "resnet18", "--engine", "deepspeed", "--zero", "3",
                               "--modes", "infer"])
    assert cfg.zero == 3
