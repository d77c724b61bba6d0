#!/usr/bin/env bash
# Line coverage of bench/ and models/ over the test suite, subprocesses included ([tool.coverage]
# in this repository's pyproject.toml). Run after tests/run.sh has made .venv. Arguments go to pytest:
#   bash tests/coverage.sh                 # the whole suite, two workers (docs/testing.md)
#   bash tests/coverage.sh -m "unit and not slow"   # the fast tier only
#   TEST_WORKERS=0 bash tests/coverage.sh  # one pytest process
# Another checkout with its own .venv (coverage installed there), measured with THIS file's
# settings, for a before/after comparison:
#   TEST_WORKERS=0 COVERAGE_CHECKOUT=/tmp/bench-main bash tests/coverage.sh
# Prints coverage's table and its TOTAL line; the data stays in the checkout's .coverage.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "${COVERAGE_CHECKOUT:-$here}"
export DS_ACCELERATOR=cpu
# Every process writes beside this one, whatever its working directory (many tests cd elsewhere).
export COVERAGE_FILE="$PWD/.coverage"
rcfile="$here/pyproject.toml"
rm -f .coverage .coverage.*
workers="${TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != 0 ]; then parallel=(-n "$workers" --dist loadgroup); fi
status=0
.venv/bin/python -m coverage run --rcfile="$rcfile" -m pytest -q -ra "${parallel[@]}" "$@" || status=$?
.venv/bin/python -m coverage combine --rcfile="$rcfile" -q
.venv/bin/python -m coverage report --rcfile="$rcfile"
exit "$status"
