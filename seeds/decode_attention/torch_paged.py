"""Decode attention in plain torch: gather each sequence's paged KV, then batched SDPA math.

The CPU engine's default. Sequences are processed in chunks of `seq_chunk` so the gathered
KV ([chunk, L, Hkv, D]) stays small; L is trimmed to the longest context outside CUDA-graph
capture (one host read of context_lens, free on CPU) and is the full block table inside it.
Masked positions are zeroed, not just excluded, because unused cache slots may hold NaN.
"""

import torch

TUNABLES = {"seq_chunk": [8, 16, 32, 64, 128, 256]}


# EVOLVE-BLOCK-START
def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale, seq_chunk=64):
    """softmax(q.k * scale) @ v over each sequence's paged KV; GQA by head grouping."""
    batch, num_q_heads, head_dim = q.shape
    num_blocks, block_size, num_kv_heads, _ = k_cache.shape
    group = num_q_heads // num_kv_heads
    out = torch.empty_like(q)
    if batch == 0:
        return out
    max_blocks = block_tables.shape[1]
    if not (q.is_cuda and torch.cuda.is_current_stream_capturing()):
        longest = int(context_lens.max())
        max_blocks = min(max_blocks, max(1, -(-longest // block_size)))
    # Padding entries (e.g. -1) are clamped to a real block; their positions are masked.
    tables = block_tables[:, :max_blocks].long().clamp(0, num_blocks - 1)
    pos = torch.arange(max_blocks * block_size, device=q.device)
    for s in range(0, batch, seq_chunk):
        e = min(batch, s + seq_chunk)
        n = e - s
        valid = pos[None, :] < context_lens[s:e, None]  # [n, L]
        k = k_cache[tables[s:e]].reshape(n, -1, num_kv_heads, head_dim).float()
        v = v_cache[tables[s:e]].reshape(n, -1, num_kv_heads, head_dim).float()
        v = v.masked_fill(~valid[:, :, None, None], 0.0)
        qg = q[s:e].reshape(n, num_kv_heads, group, head_dim).float()
        scores = torch.einsum("bhgd,blhd->bhgl", qg, k) * scale  # [n, Hkv, G, L]
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num_(0.0)  # empty rows -> zeros
        o = torch.einsum("bhgl,blhd->bhgd", probs, v)
        out[s:e] = o.reshape(n, num_q_heads, head_dim).to(q.dtype)
    return out
# EVOLVE-BLOCK-END
