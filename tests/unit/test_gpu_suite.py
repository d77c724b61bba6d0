"""The GPU acceptance suite (tests/gpu, skipped without CUDA) read on CPU: what its tests ask of
bench must agree with what bench does, or the first GPU run spends its minutes on a stale test.
These read the tests' source (no GPU, no bench call)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.config import RunConfig

GPU_TESTS = sorted((Path(__file__).resolve().parents[1] / "gpu").glob("test_*.py"))
# Record field -> the RunConfig option it echoes.
ECHOED_DEFAULTS = {"max_time_s": "max_time", "budget_s": "budget"}


def _bench_calls(tree: ast.AST):
    """The ``bench("run", ...)`` calls of a test module, as lists of their string arguments."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "bench":
            yield [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def test_the_gpu_suite_is_there():
    assert len(GPU_TESTS) >= 5, GPU_TESTS


def test_batch_auto_cells_are_timed_where_the_gpu_tests_read_their_latency():
    # check_cuda_record reads latency_ms; a --batch auto cell without --time-auto-batch is the
    # frontier only and has none (bench.scenarios.step._resolve_batch).
    for path in GPU_TESTS:
        for args in _bench_calls(ast.parse(path.read_text())):
            if "--batch" in args and args[args.index("--batch") + 1] == "auto":
                assert "--time-auto-batch" in args, f"{path.name}: {args}"


def test_defaults_the_gpu_tests_expect_are_bench_defaults():
    defaults = RunConfig()
    for path in GPU_TESTS:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Compare) and isinstance(node.left, ast.Subscript)):
                continue
            key = node.left.slice
            if not (isinstance(key, ast.Constant) and key.value in ECHOED_DEFAULTS):
                continue
            for right in node.comparators:
                if isinstance(right, ast.Constant):
                    expected = getattr(defaults, ECHOED_DEFAULTS[key.value])
                    assert right.value == expected, f"{path.name}:{node.lineno}: {key.value} == {right.value}, " \
                                                    f"default {expected}"


@pytest.mark.e2e
def test_run_sh_names_only_test_files_and_checks_that_exist():
    import re
    import subprocess
    import sys

    gpu = Path(__file__).resolve().parents[1] / "gpu"
    script = (gpu / "run.sh").read_text()
    named = set(re.findall(r"tests/gpu/(test_\w+\.py)", script))
    assert named and named <= {p.name for p in GPU_TESTS}, named
    assert {p.name for p in GPU_TESTS} <= named  # every test file runs in the one call
    listed = subprocess.run([sys.executable, str(gpu / "checks.py"), "--list"], capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    loop = re.search(r"for check in (.*?); do", script, re.S).group(1).replace("\\", " ").split()
    assert loop == listed
