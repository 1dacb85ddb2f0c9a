"""InputBuilder: vectorised block-table sync and input tensors equal a naive per-sequence build."""

import random

import numpy as np
import torch

from runtime_modules.inputs import InputBuilder
from runtime_modules.sequence import SamplingParams, Sequence


def _naive(batch, bs):
    ids, pos, slots, ctx, lidx, temps, tables = [], [], [], [], [], [], []
    t = 0
    for seq, n in batch:
        nc = seq.num_computed_tokens
        for j in range(nc, nc + n):
            ids.append(seq.token_ids[j])
            pos.append(j)
            slots.append(seq.block_table[j // bs] * bs + j % bs)
        t += n
        ctx.append(nc + n)
        tables.append(list(seq.block_table))
        if nc + n == seq.num_tokens:
            lidx.append(t - 1)
            temps.append(seq.sampling_params.temperature)
    return ids, pos, slots, ctx, lidx, temps, tables


def test_prepare_matches_naive_build_through_appends_reallocations_and_releases():
    rng = random.Random(1234)
    bs, max_len = 4, 64
    b = InputBuilder(bs, max_len, "cpu")
    seqs = []
    next_block = iter(range(10**6))
    for step in range(120):
        if len(seqs) < 40 and rng.random() < 0.5:  # new sequences (rows beyond 64 too)
            for _ in range(rng.randint(1, 6)):
                toks = [rng.randrange(1000) for _ in range(rng.randint(2, 20))]
                sp = SamplingParams(temperature=rng.choice([0.0, 0.7, 1.3]), max_tokens=8)
                seqs.append(Sequence(toks, sp))
        for s in list(seqs):
            r = rng.random()
            if r < 0.05 and s.block_table:  # finished: the row is recycled
                b.release(s)
                seqs.remove(s)
            elif r < 0.1 and s.block_table:  # preempted: a fresh table (new epoch)
                s.block_table, s.kv_epoch, s.num_computed_tokens = [], s.kv_epoch + 1, 0
        batch = []
        for s in rng.sample(seqs, k=len(seqs)):
            if s.num_computed_tokens >= s.num_tokens:
                s.token_ids.append(rng.randrange(1000))  # sampled last step
            if s.num_tokens >= max_len:
                continue
            left = s.num_tokens - s.num_computed_tokens
            n = 1 if s.num_computed_tokens else rng.randint(1, left)  # prefill may be partial
            while len(s.block_table) * bs < s.num_computed_tokens + n:
                s.block_table.append(next(next_block) % 5000)
            batch.append((s, n))
        if not batch:
            continue
        x = b.prepare(batch)
        ids, pos, slots, ctx, lidx, temps, tables = _naive(batch, bs)
        assert x.input_ids.tolist() == ids and x.positions.tolist() == pos
        assert x.meta.slot_mapping.tolist() == slots
        assert x.meta.context_lens.tolist() == ctx
        bt = x.meta.block_tables.numpy()
        for i, row in enumerate(tables):
            assert bt[i, :len(row)].tolist() == row
        assert x.num_sampled == len(lidx)
        if x.logits_indices is not None:
            assert x.logits_indices.tolist() == lidx
        else:
            assert lidx == list(range(len(batch)))
        if any(t > 0 for t in temps):
            assert torch.allclose(x.temperatures, torch.tensor(temps))
        else:
            assert x.temperatures is None
        for s, n in batch:
            s.num_computed_tokens += n


def test_block_table_beyond_max_model_len_names_the_sequence():
    b = InputBuilder(4, 8, "cpu")
    s = Sequence(list(range(2, 12)), SamplingParams())
    s.block_table = [1, 2, 3]
    try:
        b.prepare([(s, 10)])
    except RuntimeError as e:
        assert "3 blocks exceed" in str(e) and f"id={s.seq_id}" in str(e)
    else:
        raise AssertionError("expected a RuntimeError")
    assert np.all(b.synced[:1] == 0)
