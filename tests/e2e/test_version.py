"""`bench --version` names what a figure depends on: bench, torch, CUDA and Python (issue 18)."""
from __future__ import annotations

import platform

import torch
from conftest import run_bench

from bench import __version__


def test_version_names_bench_torch_cuda_and_python():
    result = run_bench("--version", timeout=120)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line == (f"bench {__version__}, torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, "
                    f"Python {platform.python_version()}")
    assert result.stderr == ""
