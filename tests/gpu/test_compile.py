"""Stage 2: torch.compile (inductor and Triton on the GPU), inference and a training step.

The first call of a compiled step is the compile, timed apart as ``compile_s``; the cap
``--max-time`` counts it, hence the long cap here."""
from __future__ import annotations

import pytest

from .conftest import check_cuda_record

COMPILE = ("--device", "cuda", "--budget", "1", "--max-time", "300", "--dtype", "bf16", "--compile")


@pytest.mark.parametrize("model,mode,batch", [("resnet50", "infer", "8"), ("vit_t", "train", "16")])
def test_compile(bench, gpu, model, mode, batch):
    records = bench("run", "--models", model, "--res", "224", "--batch", batch, "--modes", mode, *COMPILE,
                    timeout=540, name=f"compile-{model}-{mode}")
    assert len(records) == 1
    rec = records[0]
    check_cuda_record(rec, gpu, dtype="bf16")
    assert rec["compile"] is True
    assert rec["compile_s"] > 0 and rec["compile_s"] > rec["latency_ms"] / 1e3, rec["compile_s"]
    assert rec["iters"] >= 10
    assert rec["compile_graph_breaks"] is not None and rec["compile_recompiles"] is not None
    print(f"compile {model} {mode}: {rec['compile_s']:.1f} s, {rec['compile_graph_breaks']} graph breaks, "
          f"{rec['compile_recompiles']} recompiles, {rec['latency_ms']:.2f} ms/step, flags {rec.get('flags')}")
