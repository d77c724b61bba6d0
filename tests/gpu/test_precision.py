"""Stage 1: autocast bf16 and fp16, bf16 weights, channels-last with cuDNN autotuning."""
from __future__ import annotations

import pytest

from .conftest import FAST, check_cuda_record

CELLS = ("--models", "resnet50,vit_s", "--res", "224", "--batch", "8", "--modes", "infer,train")


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "bf16-weights"])
def test_half_precisions(bench, gpu, dtype):
    records = bench("run", *CELLS, "--dtype", dtype, *FAST, name=f"dtype-{dtype}")
    assert len(records) == 4
    weight_bytes = 2 if dtype == "bf16-weights" else 4
    for rec in records:
        check_cuda_record(rec, gpu, dtype=dtype, tf32=True)
        if rec["mode"] == "train":
            # The weights the step trains are in the dtype the precision says: fp32 under
            # autocast (fp16 with a GradScaler), bf16 when the model is cast.
            want = rec["params"] * weight_bytes / 2**20
            assert rec["mem_breakdown_mb"]["params"] == pytest.approx(want, rel=0.05), (dtype, rec["mem_breakdown_mb"])
        if any(h in gpu["name"] for h in ("H100", "H200")):
            # The MFU peak is a 16-bit matmul here: Hopper runs one at 700-800 TFLOP/s (SXM).
            assert rec["peak_tflops"] > 300, (dtype, rec["peak_tflops"])
        print(f"{dtype} {rec['model']} {rec['mode']}: {rec['latency_ms']:.2f} ms, mfu {rec['mfu']:.3f}, "
              f"peak {rec['peak_tflops']:.0f} TFLOP/s, {rec['peak_mem_mb']:.0f} MB")


def test_channels_last_with_cudnn_benchmark(bench, gpu):
    records = bench("run", "--models", "resnet50,pvt_small", "--res", "224", "--batch", "8", "--modes", "infer,train",
                    "--dtype", "bf16", "--channels-last", "--cudnn-benchmark", *FAST, name="channels-last")
    assert len(records) == 4
    for rec in records:
        check_cuda_record(rec, gpu, dtype="bf16", tf32=True)
        assert rec["channels_last"] is True and rec["cudnn_benchmark"] is True
