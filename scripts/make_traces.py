"""Write the two sample request traces, scripts/traces/chat.jsonl and agent.jsonl.

Both are in the Mooncake trace format (kvcache-ai/Mooncake, FAST25-release/traces; the
FAST'25 paper "Mooncake: Trading More Storage for Less Computation"): one JSON object a
line, `timestamp` (ms since the first request), `input_length`, `output_length` and
`hash_ids`, one id per 512-token block of the prompt, where an id that appeared before
means the same prefix up to and including that block. Only lengths, times and sharing
are modelled; fitness/traces.py synthesizes the token ids.

What the two traces model, and why:

- chat: multi-turn conversations. A few system prompts carry most traffic (Zipf
  popularity, as popular apps and presets do), and a conversation comes back after a
  think time of tens of seconds with its history grown: the next turn's prompt is the
  previous prompt plus the answer plus a new user message, so its hash_ids repeat the
  previous turn's full blocks and add new ones. A cache that kept the conversation since
  its last turn saves most of the prefill; one that evicted it by recency alone pays it
  again. The Mooncake conversation trace has a median input of about 6.9k tokens; ours
  are scaled to at most ~3,500 so that prompt plus output fits max_model_len 4096.
- agent: tool-using agent loops. Each call's context is the previous context plus the
  model's short output (a tool call) plus the tool's result, calls of one agent follow
  each other within a second or two (tool latency), outputs are short, and several
  agents run interleaved, so the cache holds several growing contexts at once and the
  scheduler sees prefill-heavy, decode-light traffic.

Run: `.venv/bin/python scripts/make_traces.py [--seed 0] [--out scripts/traces]`.
The output depends only on the seed and the arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

BLOCK = 512           # tokens per hash block, as in the Mooncake traces
MAX_INPUT = 3500      # prompt length ceiling (fits max_model_len 4096 with outputs)
MAX_MODEL_LEN = 4096


class _Ids:
    """Fresh hash ids, consecutive from 0 as in the Mooncake traces."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> list[int]:
        """`n` ids never used before."""
        ids = list(range(self.next, self.next + n))
        self.next += n
        return ids


def _grow(prev_ids: list[int], prev_len: int, new_len: int, ids: _Ids) -> list[int]:
    """hash_ids of a prompt that extends a prompt of `prev_len` tokens to `new_len`."""
    full = prev_len // BLOCK  # a partial last block changes when extended: it gets a new id
    return prev_ids[:full] + ids.take(math.ceil(new_len / BLOCK) - full)


def _out_len(rng: random.Random, median: float, lo: int, hi: int, room: int) -> int:
    """A log-normal output length in [lo, hi], small enough that its 2**k cap fits `room`."""
    n = min(hi, max(lo, round(rng.lognormvariate(math.log(median), 0.6))))
    while n > 1 and 1 << (n - 1).bit_length() > room:
        n //= 2
    return n


def chat(rng: random.Random, conversations: int) -> Iterator[dict]:
    """Multi-turn chats over a few Zipf-popular system prompts (rows in any order)."""
    ids = _Ids()
    systems = [ids.take(k) for k in (2, 1, 3, 2, 1, 2)]     # 512..1536-token system prompts
    lens = [len(s) * BLOCK for s in systems]                 # whole blocks: ids are exact
    weights = [1 / (k + 1) for k in range(len(systems))]    # Zipf, s = 1
    t = 0.0
    for _ in range(conversations):
        t += rng.expovariate(1 / 0.8)                        # a new chat every ~0.8 s
        k = rng.choices(range(len(systems)), weights=weights)[0]
        n_in = lens[k] + rng.randint(40, 500)
        hash_ids = systems[k] + ids.take(math.ceil(n_in / BLOCK) - len(systems[k]))
        when = t
        for _turn in range(rng.randint(1, 6)):
            out = _out_len(rng, 180, 12, 600, MAX_MODEL_LEN - n_in)
            yield {"timestamp": round(when * 1000), "input_length": n_in,
                   "output_length": out, "hash_ids": hash_ids}
            grown = n_in + out + rng.randint(20, 400)        # answer plus the next question
            if grown > MAX_INPUT:
                break
            when += out * 0.02 + rng.uniform(4, 16)          # read the answer, think, type
            hash_ids, n_in = _grow(hash_ids, n_in, grown, ids), grown


def agent(rng: random.Random, agents: int) -> Iterator[dict]:
    """Interleaved agent loops: contexts grow by tool results, outputs are short."""
    ids = _Ids()
    tools = ids.take(2)                                      # tool definitions, all agents
    for a in range(agents):
        when = a * 70.0 / agents + rng.uniform(0, 3)         # agents start over ~70 s
        n_in = 2 * BLOCK + rng.randint(200, 700)             # tools + the task
        hash_ids = tools + ids.take(math.ceil(n_in / BLOCK) - len(tools))
        while True:
            out = _out_len(rng, 45, 8, 300, MAX_MODEL_LEN - n_in)
            yield {"timestamp": round(when * 1000), "input_length": n_in,
                   "output_length": out, "hash_ids": hash_ids}
            grown = n_in + out + rng.randint(40, 260)        # tool call plus its result
            if grown > MAX_INPUT:
                break
            when += out * 0.02 + rng.uniform(0.2, 2.5)       # decode, then the tool runs
            hash_ids, n_in = _grow(hash_ids, n_in, grown, ids), grown


def write(path: Path, rows: Iterator[dict]) -> int:
    """Write `rows` sorted by timestamp (stable) as Mooncake JSONL; the row count."""
    ordered = sorted(rows, key=lambda r: r["timestamp"])
    t0 = ordered[0]["timestamp"]
    renumber: dict[int, int] = {}  # ids count up in order of first appearance, as Mooncake's
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in ordered:
            hash_ids = [renumber.setdefault(h, len(renumber)) for h in r["hash_ids"]]
            f.write(json.dumps({**r, "timestamp": r["timestamp"] - t0,
                                "hash_ids": hash_ids}) + "\n")
    return len(ordered)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and write both traces."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "traces",
                    help="output folder (default scripts/traces)")
    ap.add_argument("--conversations", type=int, default=90, help="chats in chat.jsonl")
    ap.add_argument("--agents", type=int, default=24, help="agent loops in agent.jsonl")
    args = ap.parse_args(argv)
    n_chat = write(args.out / "chat.jsonl", chat(random.Random(args.seed), args.conversations))
    n_agent = write(args.out / "agent.jsonl", agent(random.Random(args.seed), args.agents))
    print(f"wrote {n_chat} rows to {args.out / 'chat.jsonl'}, "
          f"{n_agent} rows to {args.out / 'agent.jsonl'}")


if __name__ == "__main__":
    main()
