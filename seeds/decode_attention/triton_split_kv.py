"""Flash-decoding paged attention in Triton: split-KV partials, then one reduce.

Stage 1, grid (batch, kv_head, num_splits): each program takes one sequence, one KV head
and one contiguous slice of the context. The query heads that share the KV head are
packed into one [BLOCK_G >= 16, D] tile so `tl.dot` runs on tensor cores; it walks its
slice in BLOCK_N-token tiles (block ids looked up per token, so tiles may span paged
blocks), keeps an online softmax in fp32 (base 2), and writes a normalised partial output
plus its log-sum-exp. Stage 2, grid (batch, q_head): reads every partial of a head once
and merges them by their log-sum-exps.

CUDA-graph safe: grids and buffers depend only on shapes and the constant num_splits;
each program reads context_lens on the device, and slices past the end of a context do
nothing (the reduce recomputes the same split and ignores them). A context of 0 writes 0.
The slice length is ceil(ctx / num_splits) rounded up to BLOCK_N, so short contexts use
few splits and long ones all of them.
"""

import torch
import triton
import triton.language as tl

TUNABLES = {
    "num_splits": [1, 2, 4, 8, 16, 32],
    "block_n": [16, 32, 64, 128],
    "num_warps": [2, 4, 8],
    "num_stages": [1, 2, 3, 4],
}

LOG2E = 1.4426950408889634


# EVOLVE-BLOCK-START
@triton.jit
def _split_len(ctx, NUM_SPLITS: tl.constexpr, BLOCK_N: tl.constexpr):
    """Tokens per split: ceil(ctx / NUM_SPLITS) rounded up to a whole tile."""
    return tl.cdiv(tl.cdiv(ctx, NUM_SPLITS), BLOCK_N) * BLOCK_N


@triton.jit
def _decode_partial_kernel(
    q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, mid_o_ptr, mid_lse_ptr,
    qk_scale,
    stride_qb, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_tb,
    stride_ob, stride_oh, stride_os,
    stride_lb, stride_lh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    NUM_SPLITS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(lens_ptr + b)
    length = _split_len(ctx, NUM_SPLITS, BLOCK_N)
    start = split * length
    if start < ctx:
        end = tl.minimum(start + length, ctx)
        offs_g = tl.arange(0, BLOCK_G)
        offs_d = tl.arange(0, BLOCK_D)
        heads = kvh * GROUP + offs_g
        g_mask = offs_g < GROUP
        d_mask = offs_d < HEAD_DIM
        q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                    mask=g_mask[:, None] & d_mask[None, :], other=0.0)  # [G, D]
        if UPCAST:
            q = q.to(tl.float32)
        m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        for n0 in range(start, end, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            n_mask = offs_n < end
            blk = tl.load(tables_ptr + b * stride_tb + offs_n // BLOCK_SIZE, mask=n_mask,
                          other=0).to(tl.int64)
            row = offs_n % BLOCK_SIZE
            kv_mask = n_mask[:, None] & d_mask[None, :]
            k = tl.load(k_ptr + blk[:, None] * stride_kb + row[:, None] * stride_ks
                        + kvh * stride_kh + offs_d[None, :], mask=kv_mask, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [G, N]
            s = tl.where(n_mask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_ptr + blk[:, None] * stride_vb + row[:, None] * stride_vs
                        + kvh * stride_vh + offs_d[None, :], mask=kv_mask, other=0.0)
            if UPCAST:
                v = v.to(tl.float32)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
        out = acc / l_i[:, None]
        tl.store(mid_o_ptr + b * stride_ob + heads[:, None] * stride_oh + split * stride_os
                 + offs_d[None, :], out, mask=g_mask[:, None] & d_mask[None, :])
        tl.store(mid_lse_ptr + b * stride_lb + heads * stride_lh + split, m_i + tl.log2(l_i),
                 mask=g_mask)


@triton.jit
def _decode_reduce_kernel(
    mid_o_ptr, mid_lse_ptr, lens_ptr, out_ptr,
    stride_ob, stride_oh, stride_os,
    stride_lb, stride_lh,
    stride_outb, stride_outh,
    HEAD_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    ctx = tl.load(lens_ptr + b)
    length = _split_len(ctx, NUM_SPLITS, BLOCK_N)
    used = tl.cdiv(ctx, tl.maximum(length, 1))  # splits that hold tokens (0 if ctx == 0)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < used
    d_mask = offs_d < HEAD_DIM
    lse = tl.load(mid_lse_ptr + b * stride_lb + h * stride_lh + offs_s, mask=s_mask,
                  other=float("-inf"))
    o = tl.load(mid_o_ptr + b * stride_ob + h * stride_oh + offs_s[:, None] * stride_os
                + offs_d[None, :], mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    m = tl.maximum(tl.max(lse, 0), -1e30)  # finite even when no split holds tokens
    w = tl.where(s_mask, tl.exp2(lse - m), 0.0)
    denom = tl.sum(w, 0)
    acc = tl.sum(w[:, None] * o, 0)
    out = tl.where(denom > 0, acc / tl.maximum(denom, 1e-30), 0.0)
    tl.store(out_ptr + b * stride_outb + h * stride_outh + offs_d,
             out.to(out_ptr.dtype.element_ty), mask=d_mask)


def _unit_stride(t):
    """`t` itself if its last dimension has stride 1, else a contiguous copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale,
                     num_splits=16, block_n=32, num_warps=4, num_stages=2):
    """softmax(q.k * scale) @ v per sequence over its paged KV (split-KV flash decoding)."""
    batch, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    assert num_q_heads % num_kv_heads == 0, (num_q_heads, num_kv_heads)
    assert q.stride(-1) == 1 and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1
    # the kernels index 1-D inputs and block-table rows with unit strides; views that are
    # not (a column slice of a wider table, say) are copied rather than misread
    block_tables, context_lens = _unit_stride(block_tables), _unit_stride(context_lens)
    group = num_q_heads // num_kv_heads
    out = torch.empty_like(q)
    if batch == 0:
        return out
    mid_o = torch.empty((batch, num_q_heads, num_splits, head_dim), dtype=torch.float32,
                        device=q.device)
    mid_lse = torch.empty((batch, num_q_heads, num_splits), dtype=torch.float32,
                          device=q.device)
    block_d = triton.next_power_of_2(head_dim)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    # CPU tensors mean the Triton interpreter, whose tl.dot multiplies bf16 bit patterns
    # as integers (triton 3.9): feed it fp32 there. On a GPU the dot stays bf16/fp16.
    upcast = q.device.type == "cpu" and q.dtype == torch.bfloat16
    _decode_partial_kernel[(batch, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, mid_o, mid_lse,
        scale * LOG2E,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0),
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2),
        mid_lse.stride(0), mid_lse.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, NUM_SPLITS=num_splits,
        BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_D=block_d, BLOCK_N=block_n,
        PRECISION=precision, UPCAST=upcast, num_warps=num_warps, num_stages=num_stages,
    )
    _decode_reduce_kernel[(batch, num_q_heads)](
        mid_o, mid_lse, context_lens, out,
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2),
        mid_lse.stride(0), mid_lse.stride(1),
        out.stride(0), out.stride(1),
        HEAD_DIM=head_dim, NUM_SPLITS=num_splits,
        BLOCK_S=max(2, triton.next_power_of_2(num_splits)), BLOCK_D=block_d,
        BLOCK_N=block_n, num_warps=min(num_warps, 4),
    )
    return out
# EVOLVE-BLOCK-END
