"""Token sampling on the device: greedy at temperature 0, else temperature + top-p, seeded."""

from __future__ import annotations

import torch


def sample(logits: torch.Tensor, temperatures: torch.Tensor | None,
           top_ps: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """Next tokens [S] from fp32 logits [S, V]; temperatures None means all greedy."""
    greedy = logits.argmax(-1)
    if temperatures is None:
        return greedy
    probs = torch.softmax(logits / temperatures.clamp_min(1e-5).unsqueeze(1), -1)
    if top_ps is not None:
        # keep the smallest set of most likely tokens whose mass reaches top_p
        sorted_p, order = probs.sort(-1, descending=True)
        cut = (sorted_p.cumsum(-1) - sorted_p) > top_ps.unsqueeze(1)
        sorted_p = sorted_p.masked_fill(cut, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    # Gumbel-max in its exponential form: argmax p / E with E ~ Exp(1) samples from p
    noise = torch.empty_like(probs).exponential_(generator=generator)
    sampled = (probs / noise).argmax(-1)
    return torch.where(temperatures == 0, greedy, sampled)
