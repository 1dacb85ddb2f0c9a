"""Store new K/V into the paged cache with one indexed copy per cache (torch).

A slot splits into (block, offset) = divmod(slot, block_size), which works for any cache
strides; padding slots (< 0) are dropped by a mask first.
"""

# EVOLVE-BLOCK-START
def store_kvcache(key, value, k_cache, v_cache, slot_mapping):
    """k_cache/v_cache[slot] = key/value for every slot >= 0, in place."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    block, offset = slots // k_cache.shape[1], slots % k_cache.shape[1]
    k_cache[block, offset] = key[keep].to(k_cache.dtype)
    v_cache[block, offset] = value[keep].to(v_cache.dtype)
# EVOLVE-BLOCK-END
