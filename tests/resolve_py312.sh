#!/usr/bin/env bash
# CI step (tests/run.sh, before pytest): pyproject's ranges resolve on Python 3.12 with torch 2.11
# and torchvision 0.26 already installed (the lent GPU machine's), and bench's code compiles there.
#
# How, without downloading torch: this registry serves no PEP 658 metadata (no data-core-metadata
# on its simple pages), so `pip install --dry-run "torch==2.11.*"` downloads the whole wheels to
# read their metadata (530 MB torch + about 1.4 GB of CUDA libraries, tried). Instead a throwaway
# 3.12 venv gets metadata-only stand-ins for torch 2.11.0 and torchvision 0.26.0 (a .dist-info
# and no code), and `pip install --dry-run -e .` must resolve everything else around them and
# keep them: what pip would do in a researcher's environment that already has that torch.
# What it proves: the ranges (and what deepspeed/timm/fvcore require) admit torch 2.11 on 3.12,
# and every module of bench/ and models/ compiles under 3.12. What it does not: that bench runs
# on torch 2.11 (torch is a stand-in here; the GPU acceptance suite runs it there for real).
set -euo pipefail
cd "$(dirname "$0")/.."

PY312=${PY312:-}
if [ -z "$PY312" ]; then
  for c in "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 \
           "$(command -v python3.12 || true)"; do
    [ -x "$c" ] && { PY312=$c; break; }
  done
fi
[ -n "$PY312" ] || { echo "resolve_py312: no Python 3.12 found (set PY312)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-py312.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
"$PY312" -m venv "$TMP/venv"
V=$TMP/venv/bin/python
SITE=$("$V" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

# Metadata-only stand-ins: what `pip` sees of an installed distribution is its .dist-info.
stub() {  # name version requires...
  local name=$1 version=$2; shift 2
  local d="$SITE/$name-$version.dist-info"
  mkdir -p "$d"
  { echo "Metadata-Version: 2.1"; echo "Name: $name"; echo "Version: $version"
    for r in "$@"; do echo "Requires-Dist: $r"; done; } >"$d/METADATA"
  echo pip >"$d/INSTALLER"
  printf '%s\n' "$name-$version.dist-info/METADATA,," "$name-$version.dist-info/INSTALLER,," \
    "$name-$version.dist-info/RECORD,," >"$d/RECORD"
}
stub torch 2.11.0
stub torchvision 0.26.0 "torch==2.11.0"

"$V" -m pip install -q --dry-run --report "$TMP/report.json" -e . >"$TMP/pip.log" 2>&1 \
  || { cat "$TMP/pip.log" >&2; echo "resolve_py312: bench's ranges do not resolve on Python 3.12 with torch 2.11" >&2; exit 1; }
"$V" - "$TMP/report.json" <<'PY'
import json, sys
installs = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
moved = sorted(set(installs) & {"torch", "torchvision"})
if moved:
    sys.exit(f"resolve_py312: pip would replace the installed torch 2.11 / torchvision 0.26: {moved}")
print(f"resolve_py312: on Python {sys.version.split()[0]}, bench's ranges resolve with torch 2.11.0 and "
      f"torchvision 0.26.0 kept ({len(installs)} other distributions: deepspeed {installs.get('deepspeed')}, "
      f"timm {installs.get('timm')}, numpy {installs.get('numpy')})")
PY
PYTHONPYCACHEPREFIX=$TMP/pyc "$V" -m compileall -q bench models >/dev/null
PYTHONPATH=$PWD "$V" -c "import bench, sys; print('resolve_py312: bench', bench.__version__, 'compiles under', sys.version.split()[0])"
