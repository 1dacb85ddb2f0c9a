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
    sys.exit(main(["bench", *sys.argv[1:]]))
