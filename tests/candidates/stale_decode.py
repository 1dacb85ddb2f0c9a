"""A decode_attention that caches its output buffer and returns it again (stale result)."""
import torch

from seeds.decode_attention.torch_paged import decode_attention as _real

_cache = {}


def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale):
    key = tuple(q.shape)
    if key not in _cache:
        _cache[key] = _real(q, k_cache, v_cache, block_tables, context_lens, scale)
    return _cache[key]
