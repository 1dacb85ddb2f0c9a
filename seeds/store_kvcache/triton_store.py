"""Store new K/V into the paged cache in Triton: one program per token, both caches.

Each program reads its slot, skips padding (slot < 0), splits it into (block, offset) and
copies the token's [Hkv, D] key and value tiles; rows are contiguous along D, so the
loads and stores vectorise. Any key/value/cache strides are honoured (key may be a view
into a fused QKV output). CUDA-graph safe: the grid is the number of tokens.
"""

import triton
import triton.language as tl

TUNABLES = {"num_warps": [1, 2, 4, 8]}


# EVOLVE-BLOCK-START
@triton.jit
def _store_kernel(
    key_ptr, value_ptr, k_ptr, v_ptr, slots_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_cb, stride_cs, stride_ch, stride_db, stride_ds, stride_dh,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(slots_ptr + t).to(tl.int64)
    if slot >= 0:
        blk = slot // BLOCK_SIZE
        off = slot % BLOCK_SIZE
        offs_h = tl.arange(0, BLOCK_H)
        offs_d = tl.arange(0, BLOCK_D)
        mask = (offs_h[:, None] < NUM_KV_HEADS) & (offs_d[None, :] < HEAD_DIM)
        src = offs_h[:, None] * stride_kh + offs_d[None, :]
        k = tl.load(key_ptr + t * stride_kt + src, mask=mask)
        tl.store(k_ptr + blk * stride_cb + off * stride_cs + offs_h[:, None] * stride_ch
                 + offs_d[None, :], k.to(k_ptr.dtype.element_ty), mask=mask)
        v = tl.load(value_ptr + t * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :],
                    mask=mask)
        tl.store(v_ptr + blk * stride_db + off * stride_ds + offs_h[:, None] * stride_dh
                 + offs_d[None, :], v.to(v_ptr.dtype.element_ty), mask=mask)


def store_kvcache(key, value, k_cache, v_cache, slot_mapping, num_warps=2):
    """k_cache/v_cache[slot] = key/value for every slot >= 0, in place."""
    num_tokens, num_kv_heads, head_dim = key.shape
    assert key.stride(-1) == 1 and value.stride(-1) == 1
    assert k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1
    if num_tokens == 0:
        return
    slot_mapping = slot_mapping.contiguous()  # the kernel indexes it with unit stride
    _store_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=k_cache.shape[1],
        BLOCK_H=triton.next_power_of_2(num_kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim), num_warps=num_warps,
    )
# EVOLVE-BLOCK-END
