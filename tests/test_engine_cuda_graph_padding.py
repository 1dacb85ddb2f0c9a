"""CUDA-graph decode plumbing, checked on CPU: captured sizes, size choice, padded static inputs."""

import random

import pytest
import torch

from runtime_modules.inputs import InputBuilder
from runtime_modules.model_runner import fill_decode_statics, graph_size_for, graph_sizes
from runtime_modules.sequence import SamplingParams, Sequence


def test_graph_sizes_are_capped_sorted_and_end_at_max_num_seqs():
    assert graph_sizes(None, 40) == [1, 2, 4, 8, 16, 32, 40]
    assert graph_sizes([64, 3, 3, 500], 100) == [3, 64, 100]
    assert graph_sizes([4], 4) == [4]
    sizes = graph_sizes(None, 256)
    for b in range(1, 257):
        s = graph_size_for(b, sizes)
        assert s >= b and all(t < b for t in sizes if t < s)
    with pytest.raises(ValueError, match="257 exceeds the largest captured size 256"):
        graph_size_for(257, sizes)


def test_padding_rows_write_no_kv_and_read_no_kv_whatever_was_left_in_the_buffers():
    rng = random.Random(5)
    bs_tok, mx, width = 4, 16, 8
    builder = InputBuilder(bs_tok, bs_tok * width, "cpu")
    seqs = []
    for i in range(5):
        s = Sequence([rng.randrange(2, 900) for _ in range(rng.randint(3, 20))],
                     SamplingParams(temperature=0))
        s.num_computed_tokens = s.num_tokens - 1
        s.block_table = rng.sample(range(100), -(-s.num_tokens // bs_tok))
        seqs.append(s)
    x = builder.prepare([(s, 1) for s in seqs])
    g = torch.Generator().manual_seed(11)
    statics = [torch.randint(1, 999, (mx,), generator=g, dtype=torch.int32) for _ in range(4)]
    tables = torch.randint(1, 999, (mx, width), generator=g, dtype=torch.int32)
    size = graph_size_for(5, graph_sizes(None, mx))
    assert size == 8
    fill_decode_statics(x, size, *statics, tables)
    ids, pos, slots, ctx = statics
    assert ids[:5].tolist() == [s.token_ids[-1] for s in seqs]
    assert pos[:5].tolist() == [s.num_tokens - 1 for s in seqs]
    assert ctx[:5].tolist() == [s.num_tokens for s in seqs]
    assert slots[:5].tolist() == [s.block_table[(s.num_tokens - 1) // bs_tok] * bs_tok
                                  + (s.num_tokens - 1) % bs_tok for s in seqs]
    for i, s in enumerate(seqs):
        assert tables[i, :len(s.block_table)].tolist() == s.block_table
    assert slots[5:8].tolist() == [-1] * 3 and ctx[5:8].tolist() == [0] * 3
    assert ids[5:8].tolist() == [0] * 3 and pos[5:8].tolist() == [0] * 3
    with pytest.raises(ValueError, match="does not fit graph size 4"):
        fill_decode_statics(x, 4, *statics, tables)
