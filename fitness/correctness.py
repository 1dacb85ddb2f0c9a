"""The `correctness` stage: the whole engine with the candidate runtime against transformers.

The worker generates (`check_correctness`); the harness judges (`fitness/oracle.py`, with
`oracle_check` below). The model is written to a work dir (`save_pretrained`, seeded random
weights, no download) and loaded by both sides. Prompts of mixed lengths come in two
waves, the second sharing prefixes with the first, so prefix-cache hits are exercised. The oracle is
transformers in fp32, teacher-forced on the engine's own output: at every generated
position the engine's token must be the oracle's argmax. On CPU (fp32) that is exact
greedy equality. On GPU (bf16) a mismatch is allowed only at a near-tie (the oracle's top-1
and the engine's token within `tie_tol` nats), after which that sequence is no longer
compared; the largest log-probability deficit before it is reported as a metric.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from fitness.result import StageResult

MAX_TOKENS = 12


def _prompts(seed: int, vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    wave1 = [[rng.randrange(2, vocab) for _ in range(n)] for n in (3, 17, 41, 24, 9, 33)]
    shared = [rng.randrange(2, vocab) for _ in range(20)]
    wave2 = [wave1[2][:35] + [rng.randrange(2, vocab) for _ in range(4)],
             shared + [rng.randrange(2, vocab) for _ in range(5)],
             shared + [rng.randrange(2, vocab) for _ in range(11)],
             wave1[5] + [rng.randrange(2, vocab)]]
    return wave1, wave2


def model_dir(model: str, root: Path | None = None) -> Path:
    """A Hugging Face folder for `model`: a preset written under `root` (default: the
    current directory), or the given folder."""
    import torch

    from runtime_modules.models import save_pretrained

    if Path(model).is_dir():
        return Path(model)
    path = (root or Path.cwd()) / f"model-{model}"
    if not (path / "config.json").exists():
        save_pretrained(model, path, seed=0, dtype=torch.float32)
    return path


def loaded_mismatch(llm: Any, spec: dict[str, Any]) -> str | None:
    """None if the engine loaded exactly the spec's programs (by code hash), else why."""
    from runtime_modules.slots import code_hash, program_path

    loaded = llm.loaded_slots
    for slot, choice in spec["slots"].items():
        want = code_hash(program_path(slot, choice["program"]).read_text(encoding="utf-8"))
        got = (loaded.get(slot) or {}).get("code_hash")
        if got != want:
            return (f"the engine ran {slot} with code hash {str(got)[:12]}, not the candidate's "
                    f"{want[:12]}: the candidate was not loaded")
    return None


def check_correctness(ctx: Any) -> StageResult:
    """Greedy outputs of the engine with this runtime, for the harness's oracle to judge.

    The worker only generates: the prompts come from the evaluation's seed, and the
    outputs go back in the artifacts (`outputs`); the harness teacher-forces them through
    transformers in its own process (fitness/oracle.py), out of the candidate's reach.
    """
    import torch

    from runtime_modules import LLM, SamplingParams

    device = "cuda" if str(ctx.device).startswith("cuda") else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    path = model_dir(ctx.model)
    llm = LLM(str(path), runtime=ctx.spec, device=device, dtype=dtype, seed=0)
    why = loaded_mismatch(llm, ctx.spec)
    if why:
        return StageResult("correctness", "rejected", {}, why, {"loaded": llm.loaded_slots})
    wave1, wave2 = _prompts(ctx.seed, llm.model_config.vocab_size)
    greedy = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    outs = [o.token_ids for o in llm.generate(wave1, greedy)]
    outs += [o.token_ids for o in llm.generate(wave2, greedy)]
    return StageResult("correctness", "passed",
                       {"dtype": str(dtype),
                        "prefix_hit_tokens": int(llm.stats.get("prefix_cache_hit_tokens", 0))},
                       None, {"outputs": [[int(t) for t in o] for o in outs]})


def prompts_for(seed: int, vocab: int) -> list[list[int]]:
    """The correctness stage's prompts for an evaluation seed (both waves, in order)."""
    wave1, wave2 = _prompts(seed, vocab)
    return wave1 + wave2


def oracle_check(oracle: Any, prompts: list[list[int]], outs: list[list[int]],
                 want_lens: list[int], tie_tol: float, device: str
                 ) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """Teacher-force each engine output through the fp32 oracle; (metrics, error, artifacts).

    Every generated token must be the oracle's argmax at its position, except at a near-tie
    (within `tie_tol` nats), after which that sequence is no longer compared. `error` is
    None when all pass; the metrics count compared tokens and near-ties and give the
    largest log-probability gap accepted.
    """
    import torch

    worst, compared, ties = 0.0, 0, 0
    vocab = getattr(getattr(oracle, "config", None), "vocab_size", None)

    def stats() -> dict[str, Any]:
        return {"tokens_compared": compared, "near_ties": ties, "max_logprob_gap": worst}

    for i, (prompt, got, want) in enumerate(zip(prompts, outs, want_lens)):
        where = {"prompt_index": i, "prompt_len": len(prompt), "got": list(got)}
        if len(got) != want:
            return stats(), (f"prompt {i}: the engine produced {len(got)} tokens with "
                             f"ignore_eos and max_tokens={want}"), where
        if not got:
            continue
        outside = [j for j, t in enumerate(got) if vocab is not None and not 0 <= t < vocab]
        if outside:
            j = outside[0]
            return stats(), (f"prompt {i} (length {len(prompt)}): token {j} is {got[j]}, "
                             f"outside the vocabulary (0..{vocab - 1})"), {**where, "position": j}
        ids = torch.tensor([list(prompt) + list(got[:-1])], device=device)
        with torch.no_grad():
            # only the generated positions' logits: [len(got), V], not [prompt + got, V]
            logp = oracle(ids, logits_to_keep=len(got)).logits[0].float().log_softmax(-1)
        # one device-to-host copy per sequence, not one per token
        top = logp.argmax(-1)
        tok_t = torch.tensor(got, device=logp.device)
        gaps = (logp.gather(-1, top[:, None]) - logp.gather(-1, tok_t[:, None]))[:, 0]
        bests, gaps_l = top.tolist(), gaps.tolist()
        for j, tok in enumerate(got):
            best, gap = bests[j], gaps_l[j]
            compared += 1
            if tok == best:
                continue
            if gap <= tie_tol:
                ties += 1
                worst = max(worst, gap)
                break  # a near-tie: the sequences may diverge from here on, harmlessly
            return stats(), (f"prompt {i} (length {len(prompt)}): token {j} is {tok}, the "
                             f"oracle's greedy token is {best} (log-prob gap {gap:.4f} > tie "
                             f"tolerance {tie_tol})"), \
                {**where, "position": j, "expected_prefix": bests[: j + 1], "logprob_gap": gap}
    return stats(), None, {}
