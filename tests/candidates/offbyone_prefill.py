"""A prefill_attention whose causal mask lets each query see one position too far."""
import torch


def prefill_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                      max_seqlen_q):
    out = torch.empty_like(q)
    bs = k_cache.shape[1]
    rep = q.shape[1] // k_cache.shape[2]
    for b in range(len(context_lens)):
        s, e = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        n = int(context_lens[b])
        blocks = block_tables[b, : (n + bs - 1) // bs].long()
        k = k_cache[blocks].reshape(-1, *k_cache.shape[2:])[:n].float()
        v = v_cache[blocks].reshape(-1, *v_cache.shape[2:])[:n].float()
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        qb = q[s:e].float()
        att = torch.einsum("qhd,khd->hqk", qb, k) * scale
        pos = torch.arange(n - (e - s), n).unsqueeze(1)
        mask = torch.arange(n).unsqueeze(0) > pos + 1  # off by one: sees the next token
        att = att.masked_fill(mask.unsqueeze(0), float("-inf"))
        out[s:e] = torch.einsum("hqk,khd->qhd", att.softmax(-1).nan_to_num(), v).to(q.dtype)
    return out
