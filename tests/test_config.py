"""bench.config: each option declared once, and resume identity unchanged by how options are declared.

The pinned identities below were computed with the config.py that declared each option three times
(click option, dataclass field, parsing line). Run directories written then must still resume, so
the same command line must give the same identity dict and the same ``config_id`` hash today.
"""
from __future__ import annotations

import pytest

from bench.config import identity, identity_id, parse_command

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


def test_identity_pinned_for_defaults():
    assert _ident(["run", "--models", "resnet18"], True, RUNTIME)[1] == "0fc54c6370a224e7"
    assert _ident(["run", "--models", "resnet18"], False, RUNTIME)[1] == "976e627289f9062f"
    assert _ident(["run", "--models", "resnet18"], True, {})[1] == "e57faee113edc884"
    # --task, --res and --models are cell axes (or in the cell key): the settings hash is the same
    assert _ident(["run", "--models", "vit_t", "--res", "64"], True, {})[1] == "e57faee113edc884"


def test_identity_pinned_for_deepspeed_with_a_config_file(tmp_path):
    """A file-valued setting enters identity by its content hash, not its path."""
    ds = tmp_path / "ds.json"
    ds.write_text('{"gradient_clipping": 1.0}')
    argv = ["run", "--models", "resnet18", "--modes", "train", "--engine", "deepspeed", "--zero", "2",
            "--ds-config", str(ds)]
    ident, cid = _ident(argv, True, {})
    assert ident["ds_config"] == "b2e391694621b038" and ident["zero"] == 2 and cid == "de891f14dd5684f5"
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
