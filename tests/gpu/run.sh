#!/usr/bin/env bash
# The GPU acceptance run: ONE prepared script for ONE device call of at most 8 minutes (a task gets
# 15 minutes of device time in all, machine start included). Most valuable first; every step has
# its own timeout (cut to what the budget has left) and appends its result under $OUT the moment
# it finishes, so a call that runs out of time still returns everything measured before.
#
#   bash tests/gpu/run.sh              on the GPU machine (the device tool: carry [".whl"])
#   bash tests/gpu/run.sh --dry-run    rehearsal on a CPU machine (also BENCH_GPU_DRY_RUN=1): builds
#                                      .whl/ if absent, installs it for real into a fresh Python 3.12
#                                      venv with --no-index (the image's packages as metadata-only
#                                      stand-ins), then walks every step in order with CUDA faked out:
#                                      the tests are collected, not run; the checks say what they
#                                      would do. Checks the order and the $OUT layout.
#
# Environment: OUT (the device tool sets it; default ./gpu-out), BENCH_GPU_RUN_ID (default: UTC
# date), BENCH_GPU_BUDGET_S (default 480), PYTHON (default python3: the image's, with its torch),
# PY312 (dry run: a Python 3.12; default pyenv's).
#
# $OUT after the call (one level of folders, well inside what the device tool returns):
#   steps.jsonl        one line per step as it ends: n, step, status (ok | failed | timeout |
#                      skipped | dry-run), rc, seconds, started_s (since the start), log
#   checks.jsonl       one line per device check (tests/gpu/checks.py), as it ends
#   env.txt            nvidia-smi, torch / CUDA / cuDNN / NCCL / Triton, packages, compilers
#   records.jsonl      every record of the run directory so far (re-copied after each step)
#   results.tar.gz     the run directory results/<run-id>-<gpu>/ (re-packed after each step)
#   logs/NN-STEP.log   each step's output (pytest -v -rA); logs/NN-STEP.xml its junit
#   logs/bench-calls.tar.gz   every bench call's command line, exit code, time and output
#
# Not `set -e`: a failing step must not lose what the others produced.
set -uo pipefail

DRY=${BENCH_GPU_DRY_RUN:-0}
[ "${1:-}" = "--dry-run" ] && DRY=1
START=$(date +%s)
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
BUDGET=${BENCH_GPU_BUDGET_S:-480}
RESERVE=15        # seconds kept for the last packing
MIN_STEP=20       # a step with less than this left is skipped, and said so
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 OUT REPO DRY
N=0

note() { echo "[run.sh +$(( $(date +%s) - START ))s] $*"; }

# ------------------------------------------------------------------------------ the dry run's set-up
if [ "$DRY" = 1 ]; then
  DRYDIR=$(mktemp -d "${TMPDIR:-/tmp}/bench-gpu-dry.XXXXXX")
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    note "dry run: no .whl/ yet; building it (tests/gpu/wheels.sh)"
    bash tests/gpu/wheels.sh >"$OUT/logs/00-wheels.log" 2>&1 || { note "wheels.sh failed"; exit 1; }
  fi
  PY312=${PY312:-$(ls -d "$(pyenv root 2>/dev/null || echo /root/.pyenv)"/versions/3.12*/bin/python3.12 2>/dev/null | head -1)}
  [ -x "${PY312:-}" ] || { echo "dry run: no Python 3.12 (set PY312)" >&2; exit 1; }
  "$PY312" -m venv "$DRYDIR/venv"
  PY=$DRYDIR/venv/bin/python
  SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  # The image's packages (/work/shared/notes/gpu-machine.md) as metadata-only stand-ins, so pip's
  # offline dependency check sees what the image has; the versions are plausible, not the image's.
  for spec in torch==2.11.0 torchvision==0.26.0 triton==3.6.0 numpy==2.2.1 pandas==2.2.3 seaborn==0.13.2 \
              matplotlib==3.10.0 scipy==1.15.0 click==8.1.8 rich==13.9.4 jinja2==3.1.5 safetensors==0.5.2 \
              psutil==6.1.1 pillow==11.1.0 tensorboard==2.18.0 nvidia-ml-py==12.570.86 einops==0.8.0 \
              msgpack==1.1.0 ninja==1.11.1.3 packaging==24.2 py-cpuinfo==9.0.0 pyyaml==6.0.2 tabulate==0.9.0 \
              tqdm==4.67.1 portalocker==3.1.1 pytest==8.3.4 huggingface-hub==0.27.0; do
    name=${spec%%==*}; version=${spec##*==}; d="$SITE/${name//-/_}-$version.dist-info"
    mkdir -p "$d"
    printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$name" "$version" >"$d/METADATA"
    echo stand-in >"$d/INSTALLER"
    printf '%s\n' "${d##*/}/METADATA,," "${d##*/}/INSTALLER,," "${d##*/}/RECORD,," >"$d/RECORD"
  done
  # CUDA faked out: the tests are collected by the CPU interpreter that has torch (no GPU: pytest
  # skips them all at collection), the checks print what they would do.
  CPU_PY=${CPU_PYTHON:-$( [ -x .venv/bin/python ] && echo "$REPO/.venv/bin/python" || echo python3 )}
  export BENCH_GPU_CHECKS_DIR=$DRYDIR/checks CPU_PY
  note "dry run: fresh Python 3.12 venv $DRYDIR/venv; CPU interpreter for the faked steps: $CPU_PY"
fi
export PY

# ------------------------------------------------------------------------------ steps
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# step NAME LIMIT_S COMMAND...: COMMAND under its own timeout (LIMIT_S, cut to the budget left),
# its output in $OUT/logs/NN-NAME.log, then one line in $OUT/steps.jsonl and the results re-packed.
step() {
  local name=$1 limit=$2; shift 2
  N=$((N + 1))
  local tag log t0 left rc status
  tag=$(printf '%02d-%s' "$N" "$name")
  log=$OUT/logs/$tag.log
  export STEP_XML=$OUT/logs/$tag.xml
  t0=$(date +%s)
  left=$(( BUDGET - (t0 - START) - RESERVE ))
  if [ "$left" -lt "$MIN_STEP" ]; then
    status=skipped rc=-1
    echo "skipped: ${left}s left of the ${BUDGET}s budget" >"$log"
  else
    [ "$limit" -gt "$left" ] && limit=$left
    note "step $tag (limit ${limit}s)"
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    case $rc in
      0) status=ok ;;
      124|137) status=timeout ;;
      *) status=failed ;;
    esac
    [ "$DRY" = 1 ] && [ "$rc" = 0 ] && [ "${DRY_REAL:-0}" != 1 ] && status=dry-run
  fi
  printf '{"n": %d, "step": %s, "status": "%s", "rc": %d, "seconds": %d, "started_s": %d, "limit_s": %d, "log": %s}\n' \
    "$N" "$(json_str "$name")" "$status" "$rc" "$(( $(date +%s) - t0 ))" "$(( t0 - START ))" "$limit" \
    "$(json_str "logs/$tag.log")" >>"$OUT/steps.jsonl"
  note "step $tag: $status (rc $rc)"
  pack
  return 0
}

# What exists so far, where the device tool returns it (cheap: run after every step).
pack() {
  if [ -n "${RUN_DIR:-}" ] && [ -d "$RUN_DIR" ]; then
    cat "$RUN_DIR"/records*.jsonl >"$OUT/records.jsonl" 2>/dev/null || true
    tar -czf "$OUT/results.tar.gz" --exclude=claims -C "$(dirname "$RUN_DIR")" "$(basename "$RUN_DIR")" 2>/dev/null
  fi
  if [ -n "${LOGS:-}" ] && [ -d "$LOGS" ]; then
    tar -czf "$OUT/logs/bench-calls.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")" 2>/dev/null
  fi
}

# ------------------------------------------------------------------------------ what the steps run
install_project() {
  set -x
  local pip=("$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check)
  "${pip[@]}" .whl/*.whl || return 1
  # The project itself, with its dependencies checked offline against what is installed plus
  # .whl/; setuptools for pip's isolated build comes from .whl/build/ (never installed here).
  "$PY" -m pip install --no-index --find-links .whl --find-links .whl/build --no-compile --no-cache-dir \
    --disable-pip-version-check -e . || return 1
}

import_check() {
  if [ "$DRY" = 1 ]; then  # no torch in the rehearsal venv: what the carried wheels bring, and bench compiling on 3.12
    "$PY" -c "import duckdb, pydantic, hjson, termcolor, bench; print('imports ok: duckdb', duckdb.__version__, 'bench', bench.__file__)" \
      && "$PY" -m compileall -q bench models tests/gpu
  else
    "$PY" -c "import bench.cli, deepspeed, fvcore, timm, duckdb, pycocotools, pydantic, torch; \
print('imports ok: torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'timm', timm.__version__, \
'duckdb', duckdb.__version__, 'bench', bench.cli.__file__)"
  fi
}

record_env() {
  local tpy=$PY
  [ "$DRY" = 1 ] && tpy=$CPU_PY
  {
    echo "# tests/gpu/run.sh $([ "$DRY" = 1 ] && echo --dry-run)  $(date -u +%Y-%m-%dT%H:%M:%SZ)  host $(hostname)"
    echo "# git: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo '?')"
    echo; echo "## nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi: none"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit,pstate --format=csv 2>&1 || true
    echo; echo "## torch ($tpy)"
    "$tpy" - <<'PY' 2>&1
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    print("nccl", ".".join(map(str, torch.cuda.nccl.version())))
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"device {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, "
              f"{p.multi_processor_count} SMs")
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:
    print("triton: not importable:", exc)
PY
    echo; echo "## packages ($PY)"
    "$PY" -m pip list --disable-pip-version-check 2>/dev/null
    echo; echo "## compilers"; (gcc --version 2>&1 | head -1) || echo "gcc: none"; (nvcc --version 2>&1 | tail -1) || echo "nvcc: none"
    echo; echo "## cpu / memory"; nproc; free -g | head -2
    echo; echo "## carried wheels"; ls -1R .whl 2>/dev/null || echo "(no .whl/)"
  } >"$OUT/env.txt" 2>&1
  echo "written: $OUT/env.txt"
}

tests() {  # tests FILE [-k EXPR]: pytest on the GPU; collection only in the dry run
  if [ "$DRY" = 1 ]; then
    "$CPU_PY" -m pytest --collect-only -q -p no:cacheprovider "$@"
  else
    "$PY" -m pytest -v -rA -p no:cacheprovider --junitxml="$STEP_XML" "$@"
  fi
}

device_check() {  # device_check NAME: one tests/gpu/checks.py check, its line appended to checks.jsonl
  local py=$PY dry=()
  [ "$DRY" = 1 ] && { py=$CPU_PY; dry=(--dry-run); }
  "$py" tests/gpu/checks.py "$1" "${dry[@]}" | tee -a "$OUT/checks.jsonl"
}
export -f install_project import_check record_env tests device_check

# ------------------------------------------------------------------------------ the run
DRY_REAL=1 step install 120 bash -c install_project
if ! (cd /tmp && "$PY" -c "import bench" 2>/dev/null); then
  note "the editable install did not take; running from the source tree (PYTHONPATH=$REPO)"
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
DRY_REAL=1 step import-check 60 bash -c import_check
DRY_REAL=1 step env 30 bash -c record_env

if [ "$DRY" = 1 ]; then
  GPU="Dry Run Fake GPU"
  RUN_DIR=$DRYDIR/results/${BENCH_GPU_RUN_ID:-$(date -u +%Y%m%d)}-dry-run-fake-gpu
else
  GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null)
  [ -n "$GPU" ] || { note "no CUDA device visible to torch: stopping after the environment"; pack; exit 4; }
  SLUG=$(echo "$GPU" | tr '[:upper:]' '[:lower:]' | sed -E 's/^nvidia //; s/[^a-z0-9]+/-/g; s/^-+|-+$//g')
  RUN_DIR=$REPO/results/${BENCH_GPU_RUN_ID:-$(date -u +%Y%m%d)}-$SLUG
fi
LOGS=${RUN_DIR}-logs
mkdir -p "$RUN_DIR" "$LOGS"
export BENCH_GPU_OUT=$RUN_DIR BENCH_GPU_LOGS=$LOGS
unset DS_ACCELERATOR
note "GPU: $GPU; run directory: $RUN_DIR"

# Most valuable first: does CUDA timing measure the device (a known spin kernel), the main job at
# bf16, the engines over a one-rank NCCL group; then the device checks, the rest of the suite.
step event-timing 90 bash -c 'tests tests/gpu/test_timing.py -k cuda_events'
step main-job-bf16 210 bash -c 'tests tests/gpu/test_main_job.py'
step engines 120 bash -c 'tests tests/gpu/test_engines.py'
for check in gemm-peak tf32 int32-indexing nvml-energy kineto-log-level nccl-world-1-teardown \
             compile-hooks-and-auto-batch; do
  case $check in
    nccl-world-1-teardown|compile-hooks-and-auto-batch) limit=150 ;;
    *) limit=60 ;;
  esac
  step "check-$check" "$limit" bash -c "device_check $check"
done
step tf32-and-precision 120 bash -c 'tests tests/gpu/test_timing.py tests/gpu/test_precision.py -k "not cuda_events"'
step compile 120 bash -c 'tests tests/gpu/test_compile.py'
step batch-auto 150 bash -c 'tests tests/gpu/test_batch_auto.py'
step profile 90 bash -c 'tests tests/gpu/test_profile.py'

pack
ELAPSED=$(( $(date +%s) - START ))
note "finished in ${ELAPSED}s of the ${BUDGET}s budget; under $OUT:"
(cd "$OUT" && find . -type f | sort)

if [ "$DRY" = 1 ]; then
  # The rehearsal's verdict: every step ran, in order, and left its line and log where expected.
  EXPECTED="install import-check env event-timing main-job-bf16 engines check-gemm-peak check-tf32 \
check-int32-indexing check-nvml-energy check-kineto-log-level check-nccl-world-1-teardown \
check-compile-hooks-and-auto-batch tf32-and-precision compile batch-auto profile"
  GOT=$(sed -E 's/.*"step": "([^"]+)".*/\1/' "$OUT/steps.jsonl" | tr '\n' ' ' | sed 's/ $//')
  BAD=$(grep -v -E '"status": "(ok|dry-run)"' "$OUT/steps.jsonl" || true)
  problems=()
  [ "$GOT" = "$(echo $EXPECTED)" ] || problems+=("step order: got '$GOT'")
  [ -z "$BAD" ] || problems+=("steps not ok: $BAD")
  [ "$(wc -l <"$OUT/checks.jsonl")" = 7 ] || problems+=("checks.jsonl: $(wc -l <"$OUT/checks.jsonl") lines, not 7")
  for f in env.txt steps.jsonl checks.jsonl results.tar.gz logs/01-install.log logs/17-profile.log; do
    [ -s "$OUT/$f" ] || problems+=("missing or empty: $f")
  done
  rm -rf "$DRYDIR"
  if [ "${#problems[@]}" -gt 0 ]; then
    printf 'dry run: FAILED: %s\n' "${problems[@]}" >&2
    exit 1
  fi
  note "dry run: ok (17 steps in order, \$OUT layout as documented) in ${ELAPSED}s"
fi
exit 0
