#!/usr/bin/env bash
# GPU acceptance run: install from carried wheels, record the environment, run one stage of
# tests/gpu (each stage fits one 10-minute device call) and leave everything under $OUT.
#
#   bash tests/gpu/run.sh stage1|stage2|stage3          one stage (the device tool: one call each)
#   bash tests/gpu/run.sh all                            every stage in one go (no per-call limit)
#   bash tests/gpu/run.sh install                        install and record the environment only
#
# Run from anywhere on the GPU machine; it works in the repository root. Environment:
#   OUT                 where results go (the device tool sets it; default ./gpu-out)
#   BENCH_GPU_RUN_ID    run id, the same for every stage of one acceptance run (default: UTC date)
#   BENCH_GPU_LIMIT_S   seconds this whole call may take (default 590 for a stage, none for all);
#                       pytest is stopped early enough to leave time to pack the results
#   PYTHON              interpreter (default python3: the one that holds the machine's torch)
#
# What comes back (the device tool returns at most 8 files, at most 2 folders down):
#   $OUT/env.txt                         nvidia-smi, driver, torch/CUDA/cuDNN/NCCL, packages
#   $OUT/pytest-<stage>.log              pytest -v output; the stage's exit code is its last line
#   $OUT/junit-<stage>.xml               per-test results
#   $OUT/results-<stage>.tar.gz          the run directory <run-id>-<gpu>/ (records, traces, report)
#   $OUT/logs-<stage>.tar.gz             every bench call's command line, exit code and output
#   $OUT/results/<run-id>-<gpu>/records.<stage>.jsonl   the stage's records, for a quick look
# In the run directory each stage's records are the shard records.<stage>.jsonl (and
# invocations.<stage>.jsonl): bench reads records*.jsonl as one, so the tarballs of all stages
# unpack into one directory without overwriting each other.
#
# Not `set -e`: a failing step must not lose what the others produced; the EXIT trap packs it.
set -uo pipefail

STAGE=${1:-all}
case "$STAGE" in
  stage1) TESTS=(tests/gpu/test_timing.py tests/gpu/test_precision.py tests/gpu/test_engines.py) ;;
  stage2) TESTS=(tests/gpu/test_compile.py tests/gpu/test_batch_auto.py) ;;
  stage3) TESTS=(tests/gpu/test_profile.py tests/gpu/test_main_job.py) ;;
  all) TESTS=(tests/gpu/test_timing.py tests/gpu/test_precision.py tests/gpu/test_engines.py
              tests/gpu/test_compile.py tests/gpu/test_batch_auto.py tests/gpu/test_profile.py
              tests/gpu/test_main_job.py) ;;
  install) TESTS=() ;;
  *) echo "usage: $0 stage1|stage2|stage3|all|install" >&2; exit 2 ;;
esac

START=$(date +%s)
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if [ "$STAGE" = all ]; then LIMIT=${BENCH_GPU_LIMIT_S:-0}; else LIMIT=${BENCH_GPU_LIMIT_S:-590}; fi
PACK_RESERVE=45   # seconds kept for packing after pytest
STATUS=0
RUN_DIR=""
LOGS=/tmp/bench-gpu-logs/$STAGE

note() { echo "[run.sh $(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*"; }

# ---------------------------------------------------------------------------------- packing
pack() {
  local rc=$?
  [ "$STATUS" = 0 ] && STATUS=$rc
  set +e
  if [ -n "$RUN_DIR" ] && [ -d "$RUN_DIR" ] && [ "$STAGE" != install ]; then
    local name shard
    name=$(basename "$RUN_DIR")
    if [ "$STAGE" != all ]; then
      # This stage's records and invocations become its own shard (see above).
      for base in records invocations; do
        if [ -s "$RUN_DIR/$base.jsonl" ]; then
          shard="$RUN_DIR/$base.$STAGE.jsonl"
          cat "$RUN_DIR/$base.jsonl" >>"$shard" && rm -f "$RUN_DIR/$base.jsonl"
        fi
      done
    fi
    rm -rf "$RUN_DIR/claims"
    tar -czf "$OUT/results-$STAGE.tar.gz" -C "$(dirname "$RUN_DIR")" "$name" \
      && note "packed $RUN_DIR -> $OUT/results-$STAGE.tar.gz ($(du -h "$OUT/results-$STAGE.tar.gz" | cut -f1))"
    mkdir -p "$OUT/results/$name"
    for f in "$RUN_DIR/records.$STAGE.jsonl" "$RUN_DIR/records.jsonl"; do
      [ -f "$f" ] && cp "$f" "$OUT/results/$name/"
    done
  fi
  if [ -d "$LOGS" ]; then
    tar -czf "$OUT/logs-$STAGE.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
  fi
  note "stage $STAGE finished with status $STATUS; files under $OUT:"
  (cd "$OUT" && find . -type f | sort)
  exit "$STATUS"
}
trap pack EXIT

# ---------------------------------------------------------------------------------- install
install() {
  note "installing (python: $(command -v "$PY"), $("$PY" --version 2>&1))"
  local pip=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check)
  if compgen -G ".whl/*.whl" >/dev/null; then
    # Already there (a warm machine, or a previous stage): skip the reinstall.
    if "$PY" - <<'PY' 2>/dev/null
import importlib.metadata as m, pathlib, re, sys
for w in pathlib.Path(".whl").glob("*.whl"):
    name, version = w.name.split("-")[:2]
    try:
        if m.version(name) != version:
            sys.exit(1)
    except m.PackageNotFoundError:
        sys.exit(1)
PY
    then
      note "carried wheels already installed"
    else
      "${pip[@]}" .whl/*.whl || {
        note "install into the interpreter's environment failed; installing into /tmp/site (PYTHONPATH)"
        "${pip[@]}" --upgrade --target /tmp/site .whl/*.whl || return 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
      }
    fi
  else
    note "no .whl/ here: deepspeed, fvcore & co. must already be installed (tests/gpu/wheels.sh makes .whl/)"
  fi
  # The project itself, with its dependencies checked: pyproject's ranges admit Python 3.12 and
  # the machine's torch 2.11, so pip resolves them against what is installed plus .whl/, offline.
  "$PY" -m pip install -q --no-index --find-links .whl --no-build-isolation --no-compile --no-cache-dir \
    --disable-pip-version-check -e . || {
    note "editable install failed; running from the source tree (PYTHONPATH=$REPO)"
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
  }
  "$PY" -c "import bench.cli, deepspeed, fvcore, timm; print('imports ok: deepspeed', deepspeed.__version__, 'timm', timm.__version__)" \
    || { note "the project does not import"; return 1; }
}

# ---------------------------------------------------------------------------------- environment
record_env() {
  {
    echo "# tests/gpu/run.sh $STAGE  $(date -u +%Y-%m-%dT%H:%M:%SZ)  host $(hostname)"
    echo "# git: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo '?') $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified tracked files"
    echo; echo "## uname"; uname -a
    echo; echo "## nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi failed"
    echo; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem,power.limit,pstate --format=csv 2>&1
    echo; echo "## torch"
    "$PY" - <<'PY' 2>&1
import platform, sys, torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("nccl", ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None)
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"device {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:
    print("triton: not importable:", exc)
PY
    echo; echo "## packages"
    "$PY" -m pip list --disable-pip-version-check 2>/dev/null \
      | grep -i -E '^(torch|torchvision|triton|timm|deepspeed|fvcore|iopath|pydantic|numpy|pandas|click|rich|pycocotools|nvidia-ml-py|nvidia-nccl|nvidia-cudnn|pytest|bench) '
    echo; echo "## compilers (inductor / triton / DeepSpeed JIT ops)"
    (gcc --version 2>&1 | head -1) || echo "gcc: none"
    (nvcc --version 2>&1 | tail -1) || echo "nvcc: none"
    echo; echo "## cpu / memory / disk"
    nproc; free -g | head -2; df -h "$REPO" /tmp | tail -n +1
    echo; echo "## carried wheels"; ls -1 .whl 2>/dev/null || echo "(no .whl/)"
  } >"$OUT/env.txt" 2>&1
  note "environment recorded in $OUT/env.txt"
}

# ---------------------------------------------------------------------------------- main
# Not in a pipeline: the PYTHONPATH that install() may export must stay in this shell.
install >"$OUT/install-$STAGE.log" 2>&1 || { STATUS=3; }
cat "$OUT/install-$STAGE.log"
[ "$STATUS" = 0 ] || note "install failed (see env.txt)"
record_env
cat "$OUT/install-$STAGE.log" >>"$OUT/env.txt" && rm -f "$OUT/install-$STAGE.log"
[ "$STAGE" = install ] && exit "$STATUS"
[ "$STATUS" = 0 ] || exit "$STATUS"

GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null)
if [ -z "$GPU" ]; then note "no CUDA device visible to torch"; STATUS=4; exit "$STATUS"; fi
SLUG=$(echo "$GPU" | tr '[:upper:]' '[:lower:]' | sed -E 's/^nvidia //; s/[^a-z0-9]+/-/g; s/^-+|-+$//g')
RUN_ID=${BENCH_GPU_RUN_ID:-$(date -u +%Y%m%d)}
RUN_DIR=$REPO/results/$RUN_ID-$SLUG
mkdir -p "$RUN_DIR" "$LOGS"
export BENCH_GPU_OUT=$RUN_DIR BENCH_GPU_LOGS=$LOGS
note "GPU: $GPU; run directory: $RUN_DIR"
unset DS_ACCELERATOR

timeout_cmd=()
if [ "$LIMIT" -gt 0 ]; then
  left=$(( LIMIT - ($(date +%s) - START) - PACK_RESERVE ))
  [ "$left" -gt 60 ] || { note "only ${left}s left for the tests"; left=60; }
  timeout_cmd=(timeout --signal=TERM --kill-after=15 "$left")
  note "pytest gets ${left}s"
fi
${timeout_cmd[@]+"${timeout_cmd[@]}"} "$PY" -m pytest -v -rA -p no:cacheprovider --junitxml="$OUT/junit-$STAGE.xml" \
  "${TESTS[@]}" 2>&1 | tee "$OUT/pytest-$STAGE.log"
STATUS=${PIPESTATUS[0]}
[ "$STATUS" = 124 ] && note "pytest stopped at the time limit: what ran is kept"
echo "exit status: $STATUS" >>"$OUT/pytest-$STAGE.log"
exit "$STATUS"
