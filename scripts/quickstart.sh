#!/usr/bin/env bash
# Set up, then the main job: a short offline evolution run on the CPU with the `tiny`
# preset, stored in the embedded SQLite database, then its leaderboard.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/sds run scripts/quickstart.yaml "$@"
.venv/bin/sds leaderboard quickstart
