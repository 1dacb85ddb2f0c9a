#!/usr/bin/env python
"""Throughput benchmark: same as `sds bench` (see `sds bench --help`), runnable from the tree.

Examples: `python scripts/bench.py` (CPU: tiny preset, nanovllm-bench-cpu);
on a GPU box `PYTHONPATH=. python scripts/bench.py --model qwen3-0.6b --workload nanovllm-bench`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evolve.cli import main

if __name__ == "__main__":
    # only the bench verb: it runs where sqlalchemy, optuna, deap and openai are not installed
    # (the GPU machines), with torch, triton, transformers and numpy alone
    sys.exit(main(["bench", *sys.argv[1:]], verbs=("bench",)))
