#!/usr/bin/env bash
# Set up, then the main job: a short offline evolution run on the CPU with the `tiny`
# preset, stored in the embedded SQLite database, then its leaderboard.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/sds run scripts/quickstart.yaml "$@"
.venv/bin/sds leaderboard quickstart
# the best (confirmed on the real engine) against the seed: its own workloads and a
# sample trace it never saw
.venv/bin/python scripts/heldout.py quickstart
