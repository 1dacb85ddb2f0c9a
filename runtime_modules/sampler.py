"""Token sampling on the device: greedy at temperature 0, else temperature + top-p, seeded."""

from __future__ import annotations

import torch

# Exp(1) noise may be exactly 0 (CPU draws -log1p(-u) with u in [0, 1)); a 0 divisor turns
# a token cut from the nucleus (p = 0) into 0/0 = NaN, which argmax picks. Clamp it away.
MIN_NOISE = 1e-10


def _exp_noise(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Exp(1) samples shaped like `probs` (a seam for tests)."""
    return torch.empty_like(probs).exponential_(generator=generator)


def sample(logits: torch.Tensor, temperatures: torch.Tensor | None,
           top_ps: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """Next tokens [S] from fp32 logits [S, V]; temperatures None means all greedy."""
    greedy = logits.argmax(-1)
    if temperatures is None:
        return greedy
    probs = torch.softmax(logits / temperatures.clamp_min(1e-5).unsqueeze(1), -1)
    if top_ps is not None:
        # keep the smallest set of most likely tokens whose mass reaches top_p: a token stays
        # when the mass before it is below top_p (so the most likely one always stays)
        sorted_p, order = probs.sort(-1, descending=True)
        cut = (sorted_p.cumsum(-1) - sorted_p) >= top_ps.unsqueeze(1)
        sorted_p = sorted_p.masked_fill(cut, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    # Gumbel-max in its exponential form: argmax p / E with E ~ Exp(1) samples from p
    noise = _exp_noise(probs, generator).clamp_min_(MIN_NOISE)
    sampled = (probs / noise).argmax(-1)
    return torch.where(temperatures == 0, greedy, sampled)
