#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite on the CPU. Triton kernels run
# under the interpreter; GPU tests skip cleanly; PostgreSQL tests run when
# SDS_TEST_PG_URL points at a server (.ci/run starts one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TRITON_INTERPRET="${TRITON_INTERPRET:-1}"
exec .venv/bin/python -m pytest -q "$@"
