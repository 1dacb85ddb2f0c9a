#!/usr/bin/env bash
# Set up sds from nothing: a virtual environment in .venv that sees the system's packages
# (so a machine that already has torch, e.g. a CUDA build, keeps it), the CPU build of
# torch where none is installed (never gigabytes of CUDA wheels on a CPU machine), then
# sds itself in editable mode with the test, PostgreSQL and UI extras, plus any named in
# $SDS_EXTRAS (e.g. SDS_EXTRAS=ray). Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv --system-site-packages .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$VPY" -m pip install -q torch
  else
    # 2.13.0 is the CPU build this workplace keeps on disk; elsewhere fall back to the
    # official CPU wheel index so no CUDA wheels are pulled.
    "$VPY" -m pip install -q "torch==2.13.0" 2>/dev/null \
      || "$VPY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# Optional extras on request, e.g. SDS_EXTRAS=ray (Ray tasks for evaluations: 240 MB, so
# not by default). Skip the editable install when every extra asked for is in since the
# last change to pyproject.toml (the stamp lists them).
extras="dev,postgres,ui${SDS_EXTRAS:+,$SDS_EXTRAS}"
stamp=.venv/.sds-installed
if [ -f "$stamp" ] && [ pyproject.toml -nt "$stamp" ]; then rm -f "$stamp"; fi
missing=""
for e in ${extras//,/ }; do
  grep -qxF "$e" "$stamp" 2>/dev/null || missing=1
done
if [ -n "$missing" ]; then
  "$VPY" -m pip install -q -e ".[$extras]"
  tr ',' '\n' <<<"$extras" >> "$stamp"
fi
