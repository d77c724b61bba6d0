"""Planted breakages (issue 28): does the test suite notice a measurement that has stopped measuring?

Each breakage is a one-place edit of bench's source: a constant timer, a zero memory reader, a
verdict that always says ``same``, a claim that never expires. For each, in a fresh copy of the
repository (the files git tracks, plus the working tree's changes to them), the edit is applied
and the named tests are run; a breakage is caught when at least one of them goes red. The same
tests are first run on the unchanged copy, so "red" means the breakage and not a test that fails
anyway. The named tests are all in the fast tier (``-m "unit and not slow"``); ``--tier unit`` runs the
whole fast tier against each breakage instead, ``--tier all`` the whole suite (slow: one suite per breakage).

    .venv/bin/python tests/benchmarks/planted.py                 # the named tests, about a minute each
    .venv/bin/python tests/benchmarks/planted.py --tier unit     # the fast tier against each breakage
    .venv/bin/python tests/benchmarks/planted.py --only timer    # one breakage

Exit status 0 when every breakage turned at least one test red, 1 otherwise (or 2 when the unchanged
copy already fails, or an edit no longer applies: the source moved and this file must follow it).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Breakage:
    """One planted fault: in ``path``, the regular expression ``pattern`` (matched exactly once)
    becomes ``replacement``; ``tests`` are the pytest node ids expected to go red."""

    name: str
    what: str
    path: str
    pattern: str
    replacement: str
    tests: tuple[str, ...]


BREAKAGES = (
    Breakage(
        "timer", "a constant timer: every timed iteration reads 1 ms, whatever the step took",
        "bench/measure/timing.py",
        r"return \[\(b - a\) / 1e6 for a, b in zip\(t0, t1\)\]",
        "return [1.0 for a, b in zip(t0, t1)]",
        ("tests/unit/measure/test_timing.py::test_sleep_step_measures_20ms",
         "tests/unit/measure/test_timing.py::test_time_block_and_peak_matmul_still_work"),
    ),
    Breakage(
        "memory", "a zero memory reader: the peak of every window reads 0 MB",
        "bench/measure/memory.py",
        r"(def _peak_so_far\(self\) -> float:\n)",
        r"\1        return 0.0\n",
        ("tests/unit/measure/test_measurement.py::test_cpu_peak_memory_sees_an_allocation",
         "tests/unit/measure/test_memory.py"),
    ),
    Breakage(
        "verdict", "a verdict that always says same",
        "bench/stats.py",
        r"(def verdict\(ratio_ci: tuple\[float, float\], q: float \| None, threshold: float, "
        r"lower_is_better: bool = True\) -> str:\n    \"\"\"(?:.|\n)*?\"\"\"\n)",
        r'\1    return "same"\n',
        ("tests/unit/test_stats.py", "tests/unit/report/test_verdict.py"),
    ),
    Breakage(
        "claim", "a claim that never expires: every claim's process counts as alive",
        "bench/claims.py",
        r"(def _alive\(holder: dict, path: Path \| None = None\) -> bool:\n    \"\"\"(?:.|\n)*?\"\"\"\n)",
        r"\1    return True\n",
        ("tests/unit/test_claims.py",),
    ),
)


def tracked_copy(dest: Path) -> Path:
    """The files git tracks (as they are in the working tree) copied under ``dest``."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, names.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def plant(root: Path, breakage: Breakage) -> None:
    path = root / breakage.path
    text = path.read_text()
    new, count = re.subn(breakage.pattern, breakage.replacement, text)
    if count != 1:
        raise SystemExit(f"{breakage.name}: the edit matches {count} places in {breakage.path}, not 1: "
                         "the source moved; update tests/benchmarks/planted.py")
    path.write_text(new)


def run_tests(root: Path, tests: list[str], workers: int) -> tuple[int, list[str], str]:
    """pytest in the copy, importing the copy's bench (PYTHONPATH, and the copy as working
    directory for the bench processes the tests start). Returns the exit status, the failed
    node ids and the tail of the output."""
    env = {**os.environ, "PYTHONPATH": str(root), "DS_ACCELERATOR": "cpu"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider",
           *(["-n", str(workers), "--dist", "loadgroup"] if workers else []), *tests]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    failed = sorted({m.group(1) for m in re.finditer(r"^FAILED (\S+)", out, re.M)})
    return proc.returncode, failed, "\n".join(out.strip().splitlines()[-15:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=("named", "unit", "all"), default="named",
                        help="named: each breakage's own tests; unit: the fast tier; all: the whole suite")
    parser.add_argument("--only", choices=[b.name for b in BREAKAGES], action="append",
                        help="run only this breakage (repeatable)")
    parser.add_argument("-n", "--workers", type=int, default=0, help="pytest-xdist workers (0: one process)")
    args = parser.parse_args()
    chosen = [b for b in BREAKAGES if not args.only or b.name in args.only]

    def selection(b: Breakage) -> list[str]:
        fast = ["-m", "unit and not slow"]
        return {"named": [*fast, *b.tests], "unit": fast, "all": []}[args.tier]

    with tempfile.TemporaryDirectory(prefix="bench-planted-") as tmp:
        clean = tracked_copy(Path(tmp) / "clean")
        named = (["-m", "unit and not slow", *sorted({t for b in chosen for t in b.tests})] if args.tier == "named"
                 else selection(chosen[0]))
        code, failed, tail = run_tests(clean, named, args.workers)
        if code != 0:
            print(f"the unchanged copy fails already (exit {code}): {failed}\n{tail}")
            return 2
        print(f"unchanged copy: green ({' '.join(named) or 'the whole suite'})")
        missed = []
        for b in chosen:
            root = Path(tmp) / b.name
            shutil.copytree(clean, root)
            plant(root, b)
            code, failed, tail = run_tests(root, selection(b), args.workers)
            if failed:
                print(f"{b.name}: {b.what}\n  RED ({len(failed)}): " + "\n       ".join(failed))
            else:
                missed.append(b.name)
                print(f"{b.name}: {b.what}\n  NOT CAUGHT (exit {code})\n{tail}")
            shutil.rmtree(root, ignore_errors=True)
    print("every breakage turned a test red" if not missed else f"not caught: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
