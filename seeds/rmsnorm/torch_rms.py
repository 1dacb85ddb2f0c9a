"""RMSNorm (optionally fused with the residual add) in plain torch, fp32 math."""

import torch


# EVOLVE-BLOCK-START
def rmsnorm(x, weight, eps, residual=None):
    """y = h / sqrt(mean(h^2) + eps) * weight with h = x (+ residual); returns y or (y, h)."""
    h = x.float() if residual is None else x.float() + residual.float()
    y = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.float()
    if residual is None:
        return y.to(x.dtype)
    return y.to(x.dtype), h.to(x.dtype)
# EVOLVE-BLOCK-END
