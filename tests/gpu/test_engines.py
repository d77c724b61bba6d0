"""Stage 1: DDP, DeepSpeed ZeRO-1/2 and FSDP2 at world size 1 over NCCL, against the plain engine.

One GPU: each engine makes a private one-rank NCCL process group (bench.engines.base). Two ranks
on one GPU would measure contention, not scaling, and NCCL refuses two ranks on one device."""
from __future__ import annotations

import pytest

from .conftest import FAST, FUSED, check_cuda_record, one

TRAIN = ("--res", "224", "--batch", "16", "--modes", "train", "--dtype", "bf16", *FAST)


@pytest.fixture(scope="module")
def plain(bench):
    return bench("run", "--models", "resnet50,vit_s", *TRAIN, "--engine", "none", name="engine-none")


def _check_engine(rec: dict, gpu: dict, engine: str, plain_records: list[dict], dtype: str = "bf16") -> None:
    check_cuda_record(rec, gpu, dtype=dtype)
    assert rec["engine"] == engine and rec["world_size"] == 1 and rec["global_batch"] == 16
    assert rec["optimizer_impl"] == FUSED
    assert rec["scaling_efficiency"] is None  # world size 1 is its own baseline
    base = [p for p in plain_records if p["model"] == rec["model"]]
    if base and dtype == "bf16":
        # One rank: the engine's bookkeeping must not cost more than the step itself.
        assert rec["latency_ms"] < 2.0 * base[0]["latency_ms"], (engine, rec["latency_ms"], base[0]["latency_ms"])
        print(f"{engine} zero={rec.get('zero')} {rec['model']}: {rec['latency_ms']:.2f} ms vs plain "
              f"{base[0]['latency_ms']:.2f} ms")


def test_plain_engine(plain, gpu):
    assert len(plain) == 2
    for rec in plain:
        check_cuda_record(rec, gpu, dtype="bf16")
        assert rec["engine"] == "none" and rec["zero"] is None


def test_ddp(bench, gpu, plain):
    records = bench("run", "--models", "resnet50,vit_s", *TRAIN, "--engine", "ddp", name="engine-ddp")
    assert len(records) == 2
    for rec in records:
        _check_engine(rec, gpu, "ddp", plain)
        assert rec["zero"] is None and rec.get("ds_config") is None


@pytest.mark.parametrize("zero", [1, 2])
def test_deepspeed_zero(bench, gpu, plain, zero):
    models = "resnet50,vit_s" if zero == 2 else "resnet50"
    records = bench("run", "--models", models, *TRAIN, "--engine", "deepspeed", "--zero", str(zero),
                    name=f"engine-deepspeed-zero{zero}")
    assert len(records) == len(models.split(","))
    for rec in records:
        _check_engine(rec, gpu, "deepspeed", plain)
        assert rec["zero"] == zero
        cfg = rec["ds_config"]
        assert cfg["zero_optimization"]["stage"] == zero
        # autocast, fp32 weights, and fp32 gradient reduction like DDP and FSDP2 (no module marked for bf16)
        assert cfg["torch_autocast"] == {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
        assert rec["grad_comm_dtype"] == "float32"
        assert cfg["bf16"]["enabled"] is False and cfg["fp16"]["enabled"] is False
        assert cfg["gradient_clipping"] == 0.0


def test_deepspeed_zero2_bf16_weights(bench, gpu, plain):
    """DeepSpeed's own bf16 mode: the model in bf16, fp32 master partitions in the optimizer."""
    records = bench("run", "--models", "vit_s", "--res", "224", "--batch", "16", "--modes", "train",
                    "--dtype", "bf16-weights", *FAST, "--engine", "deepspeed", "--zero", "2",
                    name="engine-deepspeed-zero2-bf16w")
    rec = one(records, model="vit_s")
    _check_engine(rec, gpu, "deepspeed", plain, dtype="bf16-weights")
    assert rec["zero"] == 2 and rec["ds_config"]["bf16"]["enabled"] is True
    parts = rec["mem_breakdown_mb"]
    assert parts["params"] == pytest.approx(rec["params"] * 2 / 2**20, rel=0.05), parts
    assert parts["master_weights"] > 0, parts  # fp32 copies the optimizer steps


def test_fsdp2(bench, gpu, plain):
    """FSDP2 (fully_shard per block, then the root) with autocast over fp32 sharded weights: at
    world size 1 each rank holds all of it, so the breakdown is the plain engine's."""
    records = bench("run", "--models", "resnet50,vit_s", *TRAIN, "--engine", "fsdp2", name="engine-fsdp2")
    assert len(records) == 2
    for rec in records:
        _check_engine(rec, gpu, "fsdp2", plain)
        assert rec["zero"] is None and rec.get("ds_config") is None
        base = one(plain, model=rec["model"])
        for part in ("params", "grads", "optimizer"):
            assert rec["mem_breakdown_mb"][part] == pytest.approx(base["mem_breakdown_mb"][part], rel=0.01), part
        assert rec["mem_breakdown_mb"]["master_weights"] == 0


def test_fsdp2_fp16_steps_through_the_sharded_grad_scaler(bench, gpu):
    records = bench("run", "--models", "vit_s", "--res", "224", "--batch", "16", "--modes", "train",
                    "--dtype", "fp16", *FAST, "--engine", "fsdp2", name="engine-fsdp2-fp16")
    rec = one(records, model="vit_s")
    check_cuda_record(rec, gpu, dtype="fp16")
    assert rec["engine"] == "fsdp2" and rec["optimizer_impl"] == FUSED
