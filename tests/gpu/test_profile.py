"""Stage 3: ``bench profile`` on CUDA: a torch.profiler trace with device events per cell, and
each record's op-category breakdown of device time (kernels counted under the op that
launched them)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import FAST, REPO, check_cuda_record, one

CATEGORIES = {"attention", "matmul", "conv", "norm", "elementwise", "communication", "other"}
# The op categories each backbone must spend device time in.
MUST_HAVE = {
    "resnet50": ("conv",),                          # convolutions only
    "vit_s": ("matmul", "attention"),               # linear layers, SDPA
    "pvt_small": ("conv", "matmul", "attention"),   # patch-embedding and spatial-reduction convs too
}


@pytest.fixture(scope="module")
def profiled(bench):
    return bench("profile", "--models", ",".join(MUST_HAVE), "--res", "224", "--batch", "8", "--dtype", "bf16",
                 *FAST, name="profile")


def test_profile_records(profiled, gpu):
    assert {r["model"] for r in profiled} == set(MUST_HAVE) and all(r["mode"] == "infer" for r in profiled)
    for rec in profiled:
        check_cuda_record(rec, gpu, dtype="bf16")


@pytest.mark.parametrize("model", list(MUST_HAVE))
def test_op_breakdown(profiled, model):
    rec = one(profiled, model=model)
    shares = rec["op_breakdown"]
    print(f"{model}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])))
    assert set(shares) == CATEGORIES
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(0 <= v <= 1 for v in shares.values())
    for category in MUST_HAVE[model]:
        assert shares[category] > 0, f"{model}: no device time under {category}: {shares}"
    assert shares["other"] < 0.5, f"{model}: most device time is uncategorised: {shares}"
    assert shares["communication"] == 0, shares  # inference, one process


@pytest.mark.parametrize("model", list(MUST_HAVE))
def test_trace_has_device_events(profiled, bench, model):
    rec = one(profiled, model=model)
    trace = Path(rec["trace_file"])
    trace = trace if trace.is_absolute() else REPO / trace
    assert trace.is_file(), trace
    assert bench.run_dir in trace.resolve().parents, "the trace lies inside the run directory"
    assert trace.parent.name == f"{model}_224_infer_b8_none_w1" and trace.name.startswith("rank0.")
    data = json.loads(trace.read_text())
    events = data["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    assert kernels, f"no device (kernel) events in {trace}"
    assert any(e.get("cat") == "cuda_runtime" for e in events), "no CUDA runtime (launch) events"
    assert data.get("deviceProperties"), "the trace does not describe the GPU"
    print(f"{model}: {len(kernels)} kernel events of {len(events)} in {trace} ({trace.stat().st_size / 1e6:.1f} MB)")
