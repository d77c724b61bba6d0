#!/usr/bin/env bash
# Set up everything from nothing and run the whole test suite (the README's test command).
# - Debian packages the tests drive for real: Slurm + munge (a real controller and nodes),
#   Chromium (opens our HTML reports).
# - The virtual environment at .venv with the project and the exact versions of .ci/lock.txt
#   (pyproject declares ranges; the lock is the set we measure with).
# - On pyenv's Python 3.12: the ranges resolve against torch 2.11 (the GPU machine's) without
#   downloading torch (tests/resolve_py312.sh, about 1 min).
# - ruff (lint) and import-linter (the layers in pyproject's [tool.importlinter]) before pytest.
# - DeepSpeed's CPU communication op, compiled once (60-80 s) so no single test pays for it.
# - pytest in two passes, below: most of the suite on both cores (pytest-xdist; --dist loadfile
#   keeps each module on one worker, so an e2e module's module-scoped run is made once), then what
#   must run alone.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(slurmctld slurmd slurm-client munge chromium)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c .ci/lock.txt -e '.[test,deploy]'

export DS_ACCELERATOR=cpu
.venv/bin/python - <<'PY'
# Build DeepSpeed's CPU ops once (cached under ~/.cache/torch_extensions).
import time
t = time.time()
from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder
try:
    ShareMemCommBuilder().load(verbose=False)
    print(f"deepspeed shm comm op ready ({time.time() - t:.0f} s)")
except Exception as exc:  # DeepSpeed falls back to torch.distributed without it
    print(f"deepspeed shm comm op not built ({exc}); DeepSpeed will use gloo collectives")
PY

bash tests/resolve_py312.sh

# Lint and the layer contract first: a change that breaks either fails before the long suite runs.
.venv/bin/ruff check .
.venv/bin/lint-imports
# Two passes (docs/testing.md):
# 1. on both cores (pytest-xdist -n 2, one OpenMP thread per worker and per bench process it starts):
#    every test that runs one process at a time and judges no timing, the unit tier and most e2e;
# 2. one at a time: the jobs of several ranks and the Slurm cluster (two at once on 2 cores would
#    starve each other's collectives), and the tests that judge real timings (bench compare's
#    verdicts on real runs, a signal's deadline): a second worker would be exactly the load bench
#    tells its users never to time under.
# `extended` tests (another variant of what a default test shows, by ranks or a cluster) are left
# out; `bash tests/run.sh --extended` runs them too (docs/testing.md has both times).
# Other arguments: one pytest call on both cores with them (`bash tests/run.sh -m "unit and not
# slow"` is the fast tier). TEST_WORKERS=0: everything in one process, one at a time.
SKIP="extended"
if [ "${1:-}" = "--extended" ]; then
  SKIP="false"
  shift
fi
workers="${TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest -q -ra -m "not ($SKIP)" "$@"
fi
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q -ra -n "$workers" --dist loadgroup "$@"
fi
ALONE="multiproc or slurm or timing"
status=0
.venv/bin/python -m pytest -q -ra --durations=20 -n "$workers" --dist loadfile -m "not ($ALONE) and not ($SKIP)" || status=$?
.venv/bin/python -m pytest -q -ra --durations=20 -m "($ALONE) and not ($SKIP)" || status=$?
exit "$status"
