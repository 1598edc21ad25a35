#!/usr/bin/env bash
# Reproduce the benchmark table (docs/benchmarks.md):  bash bench/run.sh [bench/run.py options...]
# Creates (or reuses) .venv in the repository with the pinned requirements-dev.txt, then runs
# `python bench/run.py`, which bakes the template and starts its own redis-server on a free
# port. Needs Python 3.11+ and redis-server on PATH (Debian/Ubuntu: apt-get install redis-server).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"

command -v redis-server >/dev/null 2>&1 \
    || { echo "ERROR: redis-server not found: apt-get install redis-server (or brew install redis)" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "ERROR: $("$python" -V 2>&1) is too old: Python 3.11+ is needed (set PYTHON=...)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
exec .venv/bin/python bench/run.py "$@"
