"""Causal paged prefill attention in plain torch: ragged sequences in padded groups.

The CPU engine's default. Sequences are sorted by q length and packed greedily into
groups whose padded score tensor [n, Hq, max_q, max_kv] stays under `max_group_elems`;
each group gathers its paged KV once and runs masked attention as two bmms per KV head
on strided views (no second copy of K/V). Query j of
sequence b sits at position context_len - q_len + j and sees KV positions <= it. Masked
values are zeroed (unused cache slots may hold NaN). Reads cu_seqlens/context_lens on the
host: prefill batches are never captured in CUDA graphs.
"""

import torch

TUNABLES = {"max_group_elems": [1 << 20, 1 << 22, 1 << 24, 1 << 26]}


def _groups(q_lens: list[int], ctx: list[int], heads: int, budget: int) -> list[list[int]]:
    """Sequence indices grouped so that n * max_q * max_kv * heads <= budget (or n == 1)."""
    order = sorted((i for i in range(len(q_lens)) if q_lens[i] > 0), key=lambda i: q_lens[i])
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_kv = 0
    for i in order:
        kv = max(cur_kv, ctx[i])
        if cur and (len(cur) + 1) * q_lens[i] * kv * heads > budget:
            groups.append(cur)
            cur, kv = [], ctx[i]
        cur.append(i)
        cur_kv = kv
    if cur:
        groups.append(cur)
    return groups


# EVOLVE-BLOCK-START
def _zero_rows(x, rows):
    """x[rows] = 0 in place (index_fill_: ~10x faster than a broadcast masked_fill_ on CPU)."""
    x.index_fill_(0, rows.nonzero().flatten(), 0.0)


def prefill_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                      max_seqlen_q, max_group_elems=1 << 24):
    """Causal attention of packed new tokens over each sequence's paged KV (GQA grouped)."""
    total, num_q_heads, head_dim = q.shape
    num_blocks, block_size, num_kv_heads, _ = k_cache.shape
    group = num_q_heads // num_kv_heads
    out = torch.empty_like(q)
    cu = cu_seqlens_q.tolist()
    ctx = context_lens.tolist()
    q_lens = [cu[i + 1] - cu[i] for i in range(len(ctx))]
    dev = q.device
    for members in _groups(q_lens, ctx, num_q_heads, max_group_elems):
        n = len(members)
        idx = torch.tensor(members, device=dev)
        mq, mkv = max(q_lens[i] for i in members), max(ctx[i] for i in members)
        starts = cu_seqlens_q[idx].long()
        qlen = (cu_seqlens_q[idx + 1] - cu_seqlens_q[idx]).long()
        kvlen = context_lens[idx].long()
        j = torch.arange(mq, device=dev)
        row_ok = j[None, :] < qlen[:, None]  # [n, mq]
        rows = (starts[:, None] + j[None, :]).clamp(max=total - 1)
        qpos = kvlen[:, None] - qlen[:, None] + j[None, :]  # [n, mq]
        nblk = -(-mkv // block_size)
        tables = block_tables[idx, :nblk].long().clamp(0, num_blocks - 1)
        kpos = torch.arange(nblk * block_size, device=dev)
        kv_ok = kpos[None, :] < kvlen[:, None]  # [n, L]
        k = k_cache[tables].reshape(n, -1, num_kv_heads, head_dim).float()
        v = v_cache[tables].reshape(n, -1, num_kv_heads, head_dim).float()
        _zero_rows(v.view(-1, num_kv_heads * head_dim), ~kv_ok.view(-1))
        qg = q[rows].float()  # [n, mq, Hq, D]
        see = (kpos[None, None, :] <= qpos[:, :, None]) & kv_ok[:, None, :]  # [n, mq, L]
        o = torch.empty(n, mq, num_q_heads, head_dim, device=dev)
        for h in range(num_kv_heads):  # strided head views: K/V are not copied again
            heads = slice(h * group, (h + 1) * group)
            qh = qg[:, :, heads].reshape(n, mq * group, head_dim)
            scores = torch.bmm(qh, k[:, :, h].transpose(1, 2)).view(n, mq, group, -1) * scale
            scores.masked_fill_(~see[:, :, None, :], float("-inf"))
            probs = torch.softmax(scores, dim=-1).nan_to_num_(0.0).view(n, mq * group, -1)
            o[:, :, heads] = torch.bmm(probs, v[:, :, h]).view(n, mq, group, head_dim)
        out[rows[row_ok]] = o[row_ok].to(q.dtype)
    return out
# EVOLVE-BLOCK-END
