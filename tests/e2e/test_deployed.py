"""Deployed backends through the real command line (issue 30): every CPU runtime's cell measured
and checked against fp32 eager in one shared run; an export that fails is the cell's finding while
the next cell is measured; bad input is one line, exit 2, nothing created; the report's section."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, run_bench

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("onnxscript")

CPU_BACKENDS = ["onnxruntime", "openvino", "onnxruntime-int8", "aoti"]
FAST = ["--res", "32", "--modes", "infer", "--budget", "0.3", "--max-time", "60", "--threads", "1"]


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def deployed_run(tmp_path_factory):
    """One run: resnet18 at 32 px under eager and every CPU runtime (the AOT compile dominates)."""
    out = tmp_path_factory.mktemp("deployed") / "run"
    proc = run_bench("run", "--models", "resnet18", *FAST, "--backend", ",".join(["eager", *CPU_BACKENDS]),
                     "--out", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, {r["backend"]: r for r in _records(out)}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_each_cpu_backend_cell_is_timed_costed_and_checked(deployed_run, backend):
    _, records = deployed_run
    rec = records[backend]
    assert rec["status"] == "ok", rec.get("error")
    assert rec["cell_key"] == f"cls|resnet18|32|infer|1|{backend}"
    assert rec["iters"] >= 10 and len(rec["latency_samples_ms"]) == rec["iters"] and rec["throughput"] > 0
    assert rec["export_s"] > 0 and rec["build_s"] > 0 and rec["artifact_bytes"] > 1e6  # resnet18: 11.7 M weights
    assert rec["runtime_providers"] and rec["runtime_version"]
    assert rec["peak_mem_mb"] is not None
    a = rec["agreement"]
    assert a["mode"] == backend and a["batch"] == 1 and [o["name"] for o in a["per_output"]] == ["logits"]
    assert a["within_tolerance"], a["failures"]
    assert "numerics-drift" not in rec["flags"]
    if backend == "onnxruntime-int8":  # quantized: close, but never bit-equal to fp32
        assert a["worst_rel_l2"] > 1e-4 and rec["calibration"]["images"] >= 32
        assert rec["artifact_bytes"] < records["onnxruntime"]["artifact_bytes"] / 2
    else:
        assert a["worst_cosine"] > 0.9999


def test_like_for_like_settings_are_recorded(deployed_run):
    _, records = deployed_run
    ort, ov = records["onnxruntime"]["runtime_settings"], records["openvino"]["runtime_settings"]
    assert ort["intra_op_num_threads"] == 1 and ort["inter_op_num_threads"] == 1
    assert ov["INFERENCE_NUM_THREADS"] == "1" and ov["NUM_STREAMS"] == "1" and "32" in ov["INFERENCE_PRECISION_HINT"]
    assert records["onnxruntime"]["runtime_providers"] == ["CPUExecutionProvider"]
    assert records["eager"]["backend"] == "eager" and records["eager"]["cell_key"] == "cls|resnet18|32|infer|1"


def test_report_has_the_deployed_section(deployed_run):
    out, _ = deployed_run
    proc = run_bench("report", str(out), "--format", "md", "--out", str(out / "report.md"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (out / "report.md").read_text()
    section = text.split("## Deployed", 1)[1].split("\n## ", 1)[0]
    assert "Backbones ranked per backend" in section and "reference" in section
    for backend in CPU_BACKENDS:
        assert f"| {backend} " in section
    assert "faster" in section or "slower" in section or "same" in section or "inconclusive" in section


TOY = textwrap.dedent('''
    import sys
    import torch
    import torch.nn as nn
    from models.registry import register_model


    class Branchy(nn.Module):
        """Python control flow on a tensor's value: torch.export cannot trace it."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            y = self.conv(x)
            if y.sum() > 0:
                y = y * 2
            return self.fc(y.mean((2, 3)))


    @register_model("toy")
    def toy_branchy(**kwargs):
        return Branchy()


    from bench.cli import entry
    sys.argv = ["bench", *sys.argv[1:]]
    entry()
''')


def test_an_export_that_fails_is_recorded_and_the_next_cell_is_measured(tmp_path):
    launcher = tmp_path / "with_toy.py"
    launcher.write_text(TOY)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(launcher), "run", "--models", "toy_branchy,resnet18", *FAST,
                           "--backend", "onnxruntime", "--no-report", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    toy, resnet = _records(out)
    assert toy["model"] == "toy_branchy" and toy["status"] == "export-failed", toy.get("error")
    assert "data-dependent" in toy["error"] and "\n" not in toy["error"]
    assert toy["export_error_op"].startswith("if y.sum() > 0:")
    assert resnet["model"] == "resnet18" and resnet["status"] == "ok"
    # resume: the refusal is a finding, not retried
    again = subprocess.run([sys.executable, str(launcher), "run", "--models", "toy_branchy", *FAST,
                            "--backend", "onnxruntime", "--no-report", "--out", str(out)],
                           capture_output=True, text=True, timeout=600, cwd=REPO)
    assert again.returncode == 0 and "skipping 1 finished" in again.stdout + again.stderr


@pytest.mark.parametrize("args,needle", [
    (["--backend", "onnx"], "unknown backend 'onnx'"),
    (["--backend", "tensorrt", "--device", "cpu", "--modes", "infer"], "needs a CUDA device"),
    (["--backend", "onnxruntime-int8", "--modes", "infer,train"], "INT8 post-training quantization has no training"),
    (["--backend", "openvino", "--modes", "train"], "runs inference only"),
    (["--backend", "onnxruntime", "--modes", "infer", "--dtype", "bf16"], "--dtype bf16"),
    (["--backend", "aoti", "--modes", "infer", "--compile"], "give --backend compile"),
])
def test_bad_backend_input_is_one_line_exit_2_nothing_created(args, needle, tmp_path):
    proc = run_bench("run", "--models", "resnet18", *args, "--out", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()
