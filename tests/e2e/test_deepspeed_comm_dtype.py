"""DeepSpeed ZeRO under autocast reduces gradients in the weights' dtype, like DDP and FSDP2, and
the record says so (issue 26, item 10). DeepSpeed's own default would mark Linear and Conv
parameters for bf16 reduction. One process (a one-rank gloo group), so in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("deepspeed")

_SCRIPT = textwrap.dedent("""
    import json, sys, torch, torch.nn as nn
    from bench.engines import TrainSpec, build_trainer, trainer_record_fields
    from bench.launch.context import DistContext
    user = sys.argv[1]  # a --ds-config file, or ""
    ctx = DistContext(0, 1, 0, 1, torch.device("cpu"), None)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    spec = TrainSpec(engine="deepspeed", zero=2, dtype="bf16", ds_config=user or None)
    trainer = build_trainer(model, ctx, spec)
    fields = trainer_record_fields(trainer)
    print(json.dumps({"grad_comm_dtype": fields["grad_comm_dtype"],
                      "marked": sorted({str(p.comm_dtype) for p in model.parameters() if hasattr(p, "comm_dtype")})}))
""")


def _built(tmp_path, user: dict | None = None) -> dict:
    arg = ""
    if user:
        path = tmp_path / "ds.json"
        path.write_text(json.dumps(user))
        arg = str(path)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, arg],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_zero_reduces_fp32_gradients_under_bf16_autocast_and_says_so(tmp_path):
    got = _built(tmp_path)
    assert got == {"grad_comm_dtype": "float32", "marked": []}


def test_a_user_config_that_asks_for_bf16_reduction_is_recorded(tmp_path):
    got = _built(tmp_path, {"torch_autocast": {"lower_precision_safe_modules": ["torch.nn.Linear"]}})
    assert got["grad_comm_dtype"] == "bfloat16+float32" and got["marked"] == ["torch.bfloat16"]
