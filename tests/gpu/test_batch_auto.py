"""Stage 2: ``--batch auto`` against a real CUDA out-of-memory boundary.

ResNet-50 training at 2048 x 2048 in bf16 takes several GB of activations per image, so the
doubling search hits CUDA OOM after a few trials (about 16 images on 80 GB) and bisects down to
the largest batch that runs a step, which ``--time-auto-batch`` then times (without it the record
is the frontier only, with no latency). ``--max-time`` counts the search, hence the long cap."""
from __future__ import annotations

from .conftest import check_cuda_record


def test_batch_auto_finds_the_oom_boundary(bench, gpu):
    records = bench("run", "--models", "resnet50", "--res", "2048", "--batch", "auto", "--max-batch", "4096",
                    "--time-auto-batch",  # without it the cell is the frontier only: no latency_ms to check
                    "--modes", "train", "--dtype", "bf16", "--device", "cuda", "--budget", "1", "--max-time", "240",
                    timeout=540, name="batch-auto")
    assert len(records) == 1
    rec = records[0]
    search = rec["batch_search"]
    print(f"batch auto: found {rec.get('batch')}, trials {search}, peak {rec.get('peak_mem_mb')} MB "
          f"of {gpu['total_mb']:.0f} MB")
    check_cuda_record(rec, gpu, dtype="bf16")
    assert rec["cell_key"].endswith("|auto")
    fits = [t["batch"] for t in search if t["fits"]]
    fails = [t["batch"] for t in search if not t["fits"]]
    assert fails, f"no trial ran out of memory: {search}"
    assert rec["batch"] > 0 and rec["batch"] == max(fits)
    assert max(fits) < min(fails), search  # the boundary is one place
    assert min(fails) <= 4096
    if min(fails) - max(fits) > 1:  # bisection ends at adjacent sizes
        raise AssertionError(f"search ended with a gap: {search}")
    assert rec["global_batch"] == rec["batch"]
    # The batch that fits one more image short of OOM fills the card.
    assert rec["peak_mem_mb"] > 0.5 * gpu["total_mb"], (rec["peak_mem_mb"], gpu["total_mb"])
