"""Stage 3: the main job on the GPU at bf16 (the README's sweep: 3 models x 3 sizes x inference
and training, batch 1, default budget and cap), with its report."""
from __future__ import annotations

from bench.config import RunConfig

from .conftest import check_cuda_record

MODELS = ("pvt_small", "vit_s", "resnet50")
SIZES = ("224", "512", "800")
DEFAULTS = RunConfig()  # every option at its default


def test_main_job_bf16(bench, gpu):
    records = bench("run", "--models", ",".join(MODELS), "--res", ",".join(SIZES), "--device", "cuda",
                    "--dtype", "bf16", report=True, timeout=540, name="main-job-bf16")
    cells = sorted((r["model"], r["res"], r["mode"]) for r in records)
    assert cells == sorted((m, s, mode) for m in MODELS for s in SIZES for mode in ("infer", "train"))
    for rec in sorted(records, key=lambda r: (r["model"], int(r["res"]), r["mode"])):
        print(f"{rec['model']:10s} {rec['res']:>4s} {rec['mode']:5s} {rec.get('latency_ms') or 0:8.2f} ms "
              f"{rec.get('throughput') or 0:9.1f} img/s  mfu {rec.get('mfu') or 0:.3f}  "
              f"{rec.get('peak_mem_mb') or 0:8.0f} MB  {rec['status']} {rec.get('flags') or ''}")
    for rec in records:
        check_cuda_record(rec, gpu, dtype="bf16", tf32=True)
        # The defaults as bench declares them (a literal here went stale when the cap became 90 s).
        assert rec["batch"] == 1 and rec["budget_s"] == DEFAULTS.budget and rec["max_time_s"] == DEFAULTS.max_time
    report = bench.run_dir / "report.html"
    assert report.is_file() and gpu["name"] in report.read_text(errors="replace")
