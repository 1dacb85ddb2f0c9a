"""Causal paged prefill attention in Triton: cached prefix plus the new causal part.

Grid (q tiles of BLOCK_M, batch, q_head). Query j of sequence b sits at position
p_j = context_len - q_len + j; a q tile starting at new-token m0 sees every KV position
below prefix + m0 without a mask (the cached prefix and earlier new tokens), so those
BLOCK_N tiles run unmasked; only the tiles that cross the diagonal apply the causal mask.
Block ids are looked up per KV token, so tiles may span paged blocks. Online softmax in
fp32, base 2; the result is written straight into a fresh [T, Hq, D] output.
"""

import torch
import triton
import triton.language as tl

TUNABLES = {
    "block_m": [16, 32, 64, 128],
    "block_n": [16, 32, 64, 128],
    "num_warps": [2, 4, 8],
    "num_stages": [1, 2, 3],
}

LOG2E = 1.4426950408889634


# EVOLVE-BLOCK-START
@triton.jit
def _attend_tile(q, m_i, l_i, acc, n0, qpos, ctx, b, kvh, k_ptr, v_ptr, tables_ptr,
                 stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_tb,
                 qk_scale, offs_d, d_mask, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
                 MASKED: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """One KV tile of the online softmax; MASKED applies the causal and length masks."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_mask = offs_n < ctx
    blk = tl.load(tables_ptr + b * stride_tb + offs_n // BLOCK_SIZE, mask=n_mask,
                  other=0).to(tl.int64)
    row = offs_n % BLOCK_SIZE
    kv_mask = n_mask[:, None] & d_mask[None, :]
    k = tl.load(k_ptr + blk[:, None] * stride_kb + row[:, None] * stride_ks + kvh * stride_kh
                + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + blk[:, None] * stride_vb + row[:, None] * stride_vs + kvh * stride_vh
                + offs_d[None, :], mask=kv_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [M, N]
    if MASKED:
        see = (offs_n[None, :] <= qpos[:, None]) & n_mask[None, :]
        s = tl.where(see, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, cu_ptr, lens_ptr, tables_ptr,
    qk_scale,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_tb,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    mt = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    q_start = tl.load(cu_ptr + b)
    q_len = tl.load(cu_ptr + b + 1) - q_start
    m0 = mt * BLOCK_M
    if m0 < q_len:
        ctx = tl.load(lens_ptr + b)
        prefix = ctx - q_len
        kvh = h // GROUP
        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = offs_m < q_len
        d_mask = offs_d < HEAD_DIM
        tok = (q_start + offs_m).to(tl.int64)
        q = tl.load(q_ptr + tok[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                    mask=m_mask[:, None] & d_mask[None, :], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
        qpos = prefix + offs_m
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        # Every row of this tile sees all positions < prefix + m0: no mask needed there.
        full = ((prefix + m0) // BLOCK_N) * BLOCK_N
        for n0 in range(0, full, BLOCK_N):
            m_i, l_i, acc = _attend_tile(
                q, m_i, l_i, acc, n0, qpos, ctx, b, kvh, k_ptr, v_ptr, tables_ptr,
                stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_tb,
                qk_scale, offs_d, d_mask, BLOCK_SIZE, BLOCK_N, False, PRECISION, UPCAST)
        diag_end = tl.minimum(ctx, prefix + m0 + BLOCK_M)
        for n0 in range(full, diag_end, BLOCK_N):
            m_i, l_i, acc = _attend_tile(
                q, m_i, l_i, acc, n0, qpos, ctx, b, kvh, k_ptr, v_ptr, tables_ptr,
                stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_tb,
                qk_scale, offs_d, d_mask, BLOCK_SIZE, BLOCK_N, True, PRECISION, UPCAST)
        out = acc / l_i[:, None]
        tl.store(out_ptr + tok[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


def _unit_stride(t):
    """`t` itself if its last dimension has stride 1, else a contiguous copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def prefill_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                      max_seqlen_q, block_m=32, block_n=32, num_warps=4, num_stages=2):
    """Causal attention of packed new tokens over each sequence's paged KV (GQA)."""
    total, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    assert num_q_heads % num_kv_heads == 0, (num_q_heads, num_kv_heads)
    assert q.stride(-1) == 1 and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1
    # the kernels index 1-D inputs and block-table rows with unit strides; views that are
    # not (a column slice of a wider table, say) are copied rather than misread
    block_tables, context_lens = _unit_stride(block_tables), _unit_stride(context_lens)
    cu_seqlens_q = _unit_stride(cu_seqlens_q)
    batch = context_lens.shape[0]
    out = torch.empty_like(q)
    if total == 0 or batch == 0:
        return out
    # CPU tensors mean the Triton interpreter, whose tl.dot multiplies bf16 bit patterns
    # as integers (triton 3.9): feed it fp32 there. On a GPU the dot stays bf16/fp16.
    upcast = q.device.type == "cpu" and q.dtype == torch.bfloat16
    grid = (triton.cdiv(max_seqlen_q, block_m), batch, num_q_heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, out, cu_seqlens_q, context_lens, block_tables,
        scale * LOG2E,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0),
        GROUP=num_q_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=triton.next_power_of_2(head_dim),
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", UPCAST=upcast,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
# EVOLVE-BLOCK-END
