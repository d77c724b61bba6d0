"""OpenVINO's converter refusing a model (vit_s at 224: timm's bicubic position-embedding
resampling has no conversion rule) is the cell's finding, export-failed with the op, not an error."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.deploy.base import DeploySpec, Exported, ExportFailed

ov = pytest.importorskip("openvino")

MESSAGE = ("Check 'false' failed at src/frontends/common_translators/src/utils.cpp:1:\n"
           "FrontEnd API failed with OpConversionFailure:\nModel wasn't fully converted.\nSummary:\n"
           "-- No conversion rule found for operations: aten._upsample_bicubic2d_aa.default\n")


class OpConversionFailure(Exception):
    pass


def test_a_conversion_the_converter_refuses_is_an_export_failure_naming_the_op(monkeypatch, tmp_path):
    from bench.deploy.openvino import OpenVino

    def refuse(_artifact):
        raise OpConversionFailure(MESSAGE)

    monkeypatch.setattr(ov, "convert_model", refuse)
    spec = DeploySpec(torch.device("cpu"), 1, Path(tmp_path), [])
    with pytest.raises(ExportFailed) as caught:
        OpenVino().build(Exported(object(), 0.1), torch.zeros(1, 3, 32, 32), spec)
    assert caught.value.op == "aten._upsample_bicubic2d_aa.default"
    assert "No conversion rule found for operations" in str(caught.value)


@pytest.mark.e2e  # a fresh interpreter: OpenVINO reports its import, so it must not be loaded yet
def test_openvino_sends_no_telemetry_and_forks_nothing():
    """OpenVINO's import and conversion report to Google Analytics from a forked process; one such
    fork hung a test run. bench's runtime switches it off before OpenVINO loads."""
    pytest.importorskip("openvino")
    code = """
import os, sys, torch
forks = []
os.register_at_fork(before=lambda: forks.append(1))
from bench.deploy.openvino import _openvino
ov = _openvino()
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
ov.convert_model(torch.export.export(model, (torch.randn(1, 3, 16, 16),)))
print(len(forks), sys.modules.get("openvino_telemetry"))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "None"], out.stdout
