#!/usr/bin/env bash
# Fill .whl/ (git-ignored by the `*.whl` pattern) with every wheel the GPU machine lacks, for
# CPython 3.12 on manylinux x86_64. Run it HERE, on a machine that reaches the package registry;
# the GPU machine reaches none, so the device tool carries the folder (`carry: [".whl"]`) and
# tests/gpu/run.sh installs from it with --no-index --no-deps.
#
# What is missing there (tests/gpu/README.md, /work/shared/notes/gpu-machine.md):
# - deepspeed and fvcore: source-only on the registry, built here into py3-none-any wheels
#   (DS_BUILD_OPS=0: no op is compiled ahead; DeepSpeed JIT-builds one only if a config asks).
# - their Python dependencies that the GPU image does not hold; and timm at the project's pin, so
#   the GPU measures the same model definitions as the CPU runs (the image's timm may differ).
# Versions are .ci/lock.txt's (the set we measure with); each must lie in pyproject.toml's range,
# since run.sh installs the project there with `pip install --no-index --find-links .whl -e .`,
# which checks every dependency against what is installed plus these wheels.
#
# Usage: bash tests/gpu/wheels.sh        (PYTHON=... to use another interpreter with pip)
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DEST=.whl
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-wheels.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Built here from source distributions (pure Python).
SOURCE_ONLY=(
  "deepspeed==0.19.8"
  "fvcore==0.1.5.post20221221"
  "iopath==0.1.10"              # fvcore (0.1.10 has no wheel)
)
# Downloaded as wheels for cp312 / manylinux x86_64 (or py3-none-any).
BINARY=(
  "yacs==0.1.8"                 # fvcore
  "termcolor==3.3.0"            # fvcore
  "hjson==3.1.0"                # deepspeed
  "pydantic==2.14.4"            # deepspeed
  "pydantic-core==2.50.5"       # pydantic (binary)
  "annotated-types==0.8.0"      # pydantic
  "typing-inspection==0.4.5"    # pydantic
  "typing-extensions==4.16.0"   # pydantic needs a recent one; the image's may be older
  "pycocotools==2.0.11"         # bench finetune --task det (binary)
  "torch-tb-profiler==0.4.3"    # tensorboard's PyTorch Profiler tab for the traces
  "timm==1.0.31"                # the lock's version (the image has another timm)
  "duckdb==2.0.1"               # bench query / history / report --where (binary; imported lazily since issue 26)
)
# The build backend for `pip install -e .` offline, kept apart in .whl/build/: run.sh offers it to
# pip's isolated build environment (--find-links) and never installs it into the image.
BUILD=(
  "setuptools==84.2.1"          # pyproject [build-system] requires setuptools>=64
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done

echo "building source-only packages: ${SOURCE_ONLY[*]}"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps -w "$TMP" "${SOURCE_ONLY[@]}"

echo "downloading wheels for cp312 manylinux x86_64: ${BINARY[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none "${platform_args[@]}" -d "$TMP" "${BINARY[@]}"

# Every wheel must install on CPython 3.12 / x86_64: pure (py3-none-any), cp312 or abi3.
bad=0
for w in "$TMP"/*.whl; do
  tags=$(basename "$w" .whl | awk -F- '{print $(NF-2)"-"$(NF-1)"-"$NF}')
  case "$tags" in
    py3-none-any|py2.py3-none-any) ;;
    cp312-cp312-*x86_64*|cp3*-abi3-*x86_64*) ;;
    *) echo "error: $(basename "$w") is not for CPython 3.12 on x86_64 ($tags)" >&2; bad=1 ;;
  esac
done
[ "$bad" = 0 ] || exit 1
n_expected=$(( ${#SOURCE_ONLY[@]} + ${#BINARY[@]} ))
n_got=$(ls "$TMP"/*.whl | wc -l)
if [ "$n_got" != "$n_expected" ]; then
  echo "error: expected $n_expected wheels, got $n_got:" >&2; ls "$TMP" >&2; exit 1
fi

mkdir -p "$TMP/build"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none "${platform_args[@]}" -d "$TMP/build" "${BUILD[@]}"

# One version of each package (two of one name stop the whole install there): replace the folder.
rm -rf "$DEST"
mkdir -p "$DEST/build"
mv "$TMP"/*.whl "$DEST"/
mv "$TMP"/build/*.whl "$DEST"/build/
if ! git check-ignore -q "$DEST/x.whl"; then
  echo "warning: $DEST/ is not git-ignored; add '*.whl' (or '/.whl/') to .gitignore" >&2
fi

# The whole set installs together on CPython 3.12 / manylinux x86_64 (no index: only these files).
"$PY" -m pip install -q --dry-run --no-index --no-deps --target "$TMP/dry-run" --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none "${platform_args[@]}" --only-binary=:all: "$DEST"/*.whl
echo "dry run: the $(ls "$DEST"/*.whl | wc -l) wheels install together on CPython 3.12 (manylinux x86_64)"

# The requirements of what we carry, to compare with the image's package list (KINDS.md):
# anything named here that neither the image nor .whl/ holds must be added above.
echo "requirements of the carried wheels (extras skipped):"
for w in "$DEST"/*.whl; do
  reqs=$(unzip -p "$w" '*.dist-info/METADATA' | grep '^Requires-Dist:' | grep -v 'extra ==' \
         | grep -v 'python_version *< *"3\.[0-9]"' \
         | sed 's/^Requires-Dist: //; s/[ ;<>=!~(\[].*//' | sort -u | tr '\n' ' ' || true)
  echo "  $(basename "$w"): ${reqs:-(none)}"
done
du -sh "$DEST"
ls -1R "$DEST"
# The device tool carries at most 64 MiB of ignored paths in all.
size_kb=$(du -sk "$DEST" | cut -f1)
if [ "$size_kb" -gt $((60 * 1024)) ]; then
  echo "error: $DEST is ${size_kb} KB, over the 60 MiB kept for it in the device tool's 64 MiB carry" >&2; exit 1
fi
