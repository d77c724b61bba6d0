"""The runtimes' names are known without importing them (bench.deploy.registry), and they agree
with what each module registers."""
import importlib
import subprocess
import sys

import pytest

from bench.deploy import registry


def test_every_listed_runtime_registers_itself_under_its_name_and_no_other():
    for module in set(registry.RUNTIME_MODULES.values()):
        importlib.import_module(module)
    assert set(registry._REGISTRY) == set(registry.RUNTIME_MODULES)
    for name in registry.RUNTIME_MODULES:
        assert registry.backend_for(name).name == name


@pytest.mark.e2e  # a fresh interpreter: this one has torch loaded already
def test_parsing_backend_names_imports_neither_a_runtime_nor_torch():
    code = ("import sys; from bench.deploy.registry import parse_backends; "
            "parse_backends('eager,onnxruntime,tensorrt'); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('bench.deploy.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['bench.deploy.registry']"
