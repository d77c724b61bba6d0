"""`bench --help` and `bench run` do not import what only other commands need (issue 26, item 1):
the GPU machine lacked duckdb, so an eager `import duckdb` in `bench query`'s module stopped every
command there. Each check runs the real entry point in a fresh interpreter and reads sys.modules
as it exits."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Imported by one command or one engine only: never at start-up.
HEAVY = ("duckdb", "scipy", "seaborn", "deepspeed", "pycocotools", "pandas", "matplotlib")
# Measuring a cell needs scipy.stats (the timing's interval); nothing else of HEAVY.
HEAVY_FOR_A_RUN = tuple(m for m in HEAVY if m != "scipy")

# Each command line in turn through the console-script entry (one interpreter: torch loads once).
_PROBE = textwrap.dedent("""
    import atexit, json, sys
    def _report():
        sys.stdout.flush()
        sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
    atexit.register(_report)
    from bench.cli import entry
    for args in json.loads(sys.argv[1]):
        sys.argv = ["bench", *args]
        try:
            entry()
        except SystemExit as stop:
            if stop.code:
                raise
""")


def _modules_after(*command_lines: tuple[str, ...], timeout: float = 240) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(command_lines)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES "))
    return set(json.loads(line[len("MODULES "):]))


@pytest.fixture(scope="module")
def torch_own_distributed() -> set[str]:
    """The torch.distributed modules `import torch` loads by itself (its c10d core): not ours to avoid."""
    out = subprocess.run([sys.executable, "-c", "import sys, torch; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, timeout=240, check=True).stdout.split()
    return {m for m in out if m.startswith("torch.distributed")}


def _distributed_beyond_torch(modules: set[str], torch_own: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith("torch.distributed") and m not in torch_own)


def test_help_imports_nothing_heavy(torch_own_distributed):
    modules = _modules_after(("--help",), ("run", "--help"), ("query", "--help"), ("report", "--help"),
                             ("compare", "--help"), ("history", "--help"), ("slurm", "--help"))
    assert [m for m in HEAVY if m in modules] == []
    assert _distributed_beyond_torch(modules, torch_own_distributed) == []  # FSDP, DTensor, elastic, ...


def test_a_run_imports_neither_the_database_nor_the_report_nor_other_engines(tmp_path, torch_own_distributed):
    modules = _modules_after(("run", "--models", "resnet18", "--res", "32", "--modes", "infer", "--budget", "0.3",
                              "--threads", "1", "--no-report", "--out", str(tmp_path / "run")))
    assert (tmp_path / "run" / "records.jsonl").is_file()
    assert [m for m in HEAVY_FOR_A_RUN if m in modules] == []


_REFUSAL_PROBE = textwrap.dedent("""
    import atexit, json, sys
    atexit.register(lambda: sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n"))
    from bench.cli import entry
    sys.argv = ["bench", *json.loads(sys.argv[1])]
    entry()
""")


@pytest.mark.parametrize("argv", [
    ("run", "--models", "resnet18,nope", "--res", "64"),             # refused while parsing
    ("run", "--models", "resnet18", "--res", "64", "--out", "/proc/no/run"),  # refused by the command
    ("finetune", "--models", "resnet18", "--out", "/proc/no/run"),
    ("flops", "--models", "nope"),
    ("report", "/no/such/run"),
    ("slurm", "submit", "--", "run", "--models", "nope"),
], ids=["run-parse", "run-out", "finetune-out", "flops", "report", "slurm-submit"])
def test_a_refused_command_line_loads_neither_torch_nor_timm(argv):
    """A refusal is one line in a fraction of a second: it took 4.8 s (run) and 2 s (report) when
    the refusal came after importing torch and timm (model names: models.catalog; the engines and
    the process group load torch when they build; denormals are flushed once the input is checked)."""
    proc = subprocess.run([sys.executable, "-c", _REFUSAL_PROBE, json.dumps(argv)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES "))
    modules = set(json.loads(line[len("MODULES "):]))
    assert [m for m in ("torch", "timm", "torchvision", "PIL", "deepspeed", "duckdb") if m in modules] == []
