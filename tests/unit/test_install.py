"""pyproject declares ranges (bench installs beside a researcher's own torch); the exact set we
measure with is .ci/lock.txt, and every installer of this repository installs with it (issue 18)."""
from __future__ import annotations

import re
import tomllib

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = REPO / ".ci" / "lock.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(r) for r in PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["test"]]


def locked() -> dict[str, Version]:
    """name -> version of each `name==version` line of the lock."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not an exact pin in {LOCK.name}: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


@pytest.mark.parametrize("req", REQUIREMENTS, ids=lambda r: r.name)
def test_dependency_is_a_range_with_a_floor(req: Requirement):
    operators = {spec.operator for spec in req.specifier}
    assert not operators & {"==", "===", "~="}, f"{req}: a pin; pins belong in .ci/lock.txt"
    assert ">=" in operators, f"{req}: no floor"


@pytest.mark.parametrize("req", REQUIREMENTS, ids=lambda r: r.name)
def test_locked_version_satisfies_the_range(req: Requirement):
    pins = locked()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is not in {LOCK.name}"
    assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req}"


def test_python_range_admits_3_11_to_3_13():
    spec = Requirement(f"python{PYPROJECT['requires-python']}").specifier
    assert [v for v in ("3.10", "3.11.0", "3.12.1", "3.13.0", "3.14.0") if spec.contains(v)] == \
        ["3.11.0", "3.12.1", "3.13.0"]


def test_torch_range_admits_the_gpu_machine_and_a_cluster_torch():
    torch = next(r for r in REQUIREMENTS if r.name == "torch")
    assert torch.specifier.contains("2.11.0") and torch.specifier.contains("2.7.1")


def test_lock_holds_no_bench_and_is_what_installers_use():
    assert "bench" not in locked()
    installs = {
        "tests/run.sh": (REPO / "tests" / "run.sh").read_text(),
        "README.md": (REPO / "README.md").read_text(),
    }
    for where, text in installs.items():
        # what installs the project (pip itself may be upgraded without the lock)
        project_install = re.compile(r"(bin/pip|-m pip) install\b(?!.*--dry-run).* -e ")
        pip_installs = [line for line in text.splitlines() if project_install.search(line)]
        assert pip_installs, f"{where} installs nothing?"
        for line in pip_installs:
            assert "-c .ci/lock.txt" in line, f"{where} installs without the lock: {line.strip()}"
