"""Request traces as workloads: formats, options, token synthesis, hashes and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fitness.traces import TraceError, load_trace, load_trace_workload, parse_spec
from fitness.workloads import TINY_VOCAB, get_workload

SAMPLES = Path(__file__).resolve().parents[1] / "scripts" / "traces"


def _jsonl(tmp_path: Path, rows: list[dict], name: str = "t.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _moon(ts: int, n_in: int, n_out: int, ids: list[int]) -> dict:
    return {"timestamp": ts, "input_length": n_in, "output_length": n_out, "hash_ids": ids}


@pytest.fixture
def moon(tmp_path: Path) -> Path:
    return _jsonl(tmp_path, [
        _moon(1000, 1100, 100, [0, 1, 2]),      # 512 + 512 + 76
        _moon(1500, 1300, 40, [0, 1, 3]),       # shares two full blocks with row 1
        _moon(4000, 700, 300, [4, 5]),          # nothing shared
        _moon(4000, 600, 17, [0]),              # shares block 0, then 88 private tokens
    ])


def test_mooncake_shared_ids_give_identical_prefixes(moon):
    w = load_trace_workload(f"trace:{moon}")
    a, b, c, d = (r.prompt_token_ids for r in w.requests)
    assert [len(x) for x in (a, b, c, d)] == [1100, 1300, 700, 600]
    assert a[:1024] == b[:1024] and a[1024:1100] != b[1024:1100]
    assert d[:512] == a[:512] and d[512:] != a[512:600]
    assert a[:512] != c[:512] and c[:512] != c[512:1024]
    assert all(0 <= t < 151936 for x in (a, b, c, d) for t in x)
    assert w.engine_overrides == {"max_model_len": 4096} and w.model == "qwen3-0.6b"
    assert [r.arrival_s for r in w.requests] == [0.0, 0.5, 3.0, 3.0]
    assert all(r.temperature == 0.6 and not r.ignore_eos for r in w.requests)
    assert w.name == f"trace:{moon}" and load_trace(f"trace:{moon}").format == "mooncake"


def test_realized_output_length_and_pow2_cap(moon):
    w = load_trace_workload(f"trace:{moon}")
    assert [r.output_len for r in w.requests] == [100, 40, 300, 17]
    assert [r.max_tokens for r in w.requests] == [128, 64, 512, 32]
    assert w.num_output_tokens == 457


def test_fixed_cap_truncates_realized_lengths(moon):
    w = load_trace_workload(f"trace:{moon}?cap=64")
    assert [r.output_len for r in w.requests] == [64, 40, 64, 17]
    assert all(r.max_tokens == 64 for r in w.requests)


def test_pow2_cap_is_clipped_to_the_context_but_never_below_the_output(tmp_path):
    p = _jsonl(tmp_path, [_moon(0, 3400, 600, [0, 1, 2, 3, 4, 5, 6])])
    r = load_trace_workload(f"trace:{p}").requests[0]
    assert (r.output_len, r.max_tokens) == (600, 696)  # 1024 would not fit 4096


def test_plain_csv_with_prefix_groups(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrival_s,input_tokens,output_tokens,prefix_group\n"
                 "0.5,100,10,sys\n1.5,60,20,sys\n2.0,80,5,\n2.5,90,7,other\n")
    load = load_trace(f"trace:{p}")
    a, b, c, d = (r.prompt_token_ids for r in load.workload.requests)
    assert load.format == "plain" and [len(x) for x in (a, b, c, d)] == [100, 60, 80, 90]
    assert a[:30] == b[:30] and a[30] != b[30]    # half of the group's shortest prompt (60)
    assert a[:10] != c[:10] and a[:10] != d[:10]
    assert [r.arrival_s for r in load.workload.requests] == [0.0, 1.0, 1.5, 2.0]
    assert [r.output_len for r in load.workload.requests] == [10, 20, 5, 7]


def test_plain_jsonl_with_prefix_tokens(tmp_path):
    p = _jsonl(tmp_path, [
        {"arrival_s": 0, "input_tokens": 50, "output_tokens": 3, "prefix_group": 7,
         "prefix_tokens": 40},
        {"arrival_s": 0.25, "input_tokens": 45, "output_tokens": 3, "prefix_group": 7,
         "prefix_tokens": 20}])
    a, b = (r.prompt_token_ids for r in load_trace_workload(f"trace:{p}").requests)
    assert a[:20] == b[:20] and a[20:40] != b[20:40]  # b shares only its 20 tokens


def test_start_count_slice_by_time_and_arrivals_restart_at_zero(moon):
    full = load_trace_workload(f"trace:{moon}")
    part = load_trace_workload(f"trace:{moon}?start=1&count=2")
    assert [r.prompt_token_ids for r in part.requests] == \
        [r.prompt_token_ids for r in full.requests[1:3]]
    assert [r.arrival_s for r in part.requests] == [0.0, 2.5]
    assert "2 requests" in part.description


def test_unsorted_rows_are_sorted_stably(tmp_path):
    p = _jsonl(tmp_path, [_moon(3000, 10, 1, [1]), _moon(1000, 20, 1, [2]),
                          _moon(3000, 30, 1, [3])])
    w = load_trace_workload(f"trace:{p}")
    assert [len(r.prompt_token_ids) for r in w.requests] == [20, 10, 30]
    assert [r.arrival_s for r in w.requests] == [0.0, 2.0, 2.0]


def test_rate_scale_halves_the_span_and_time_scale_stretches_it(moon):
    base = load_trace_workload(f"trace:{moon}").requests[-1].arrival_s
    assert load_trace_workload(f"trace:{moon}?rate_scale=2").requests[-1].arrival_s == base / 2
    assert load_trace_workload(f"trace:{moon}?time_scale=3").requests[-1].arrival_s == base * 3


def test_length_scale_shrinks_lengths_and_keeps_sharing(moon):
    w = load_trace_workload(f"trace:{moon}?length_scale=1/16&model=tiny")
    a, b, c, d = (r.prompt_token_ids for r in w.requests)
    assert [len(x) for x in (a, b, c, d)] == [32 + 32 + 5, 32 + 32 + 17, 32 + 12, 32 + 6]
    assert a[:64] == b[:64] and a[64:69] != b[64:69] and d[:32] == a[:32]
    assert a[:32] != c[:32]
    assert [r.output_len for r in w.requests] == [6, 2, 19, 1]
    assert all(0 <= t < TINY_VOCAB for x in (a, b, c, d) for t in x)
    assert w.model == "tiny" and w.engine_overrides == {"max_model_len": 512}


def test_content_hash_is_stable_and_follows_the_file(moon):
    spec = f"trace:{moon}"
    first = load_trace_workload(spec)
    assert load_trace_workload(spec).content_hash == first.content_hash
    rows = moon.read_text().splitlines()
    moon.write_text("\n".join(rows[:-1] + [rows[-1].replace("600", "601")]) + "\n")
    st = moon.stat()
    os.utime(moon, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = load_trace_workload(spec)
    assert changed.content_hash != first.content_hash
    assert len(changed.requests[-1].prompt_token_ids) == 601


def test_get_workload_delegates_and_relative_paths_resolve_from_the_repo(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # as a worker does: its own temporary directory
    w = get_workload("trace:scripts/traces/agent.jsonl?count=5")
    assert len(w.requests) == 5 and w.name == "trace:scripts/traces/agent.jsonl?count=5"


def _error(spec: str) -> str:
    with pytest.raises(TraceError) as e:
        load_trace_workload(spec)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("bad_line, expected", [
    ("{not json", "malformed JSON"),
    ('{"timestamp": 1, "input_length": 5, "hash_ids": [0]}', "missing field output_length"),
    ('{"timestamp": 1, "input_length": -5, "output_length": 1, "hash_ids": []}',
     "input_length must be an integer >= 1"),
    ('{"timestamp": 1, "input_length": 5.5, "output_length": 1, "hash_ids": []}',
     "input_length must be an integer"),
    ('{"timestamp": 1, "input_length": 5, "output_length": -1, "hash_ids": []}',
     "output_length must be an integer >= 0"),
    ('{"timestamp": -1, "input_length": 5, "output_length": 1, "hash_ids": []}',
     "timestamp must not be negative"),
    ('{"timestamp": 1, "input_length": 5, "output_length": 1, "hash_ids": [0, 1]}',
     "hash_ids has 2 blocks"),
    ('{"timestamp": 1, "input_length": 5, "output_length": 1, "hash_ids": "x"}',
     "hash_ids must be a list"),
    ("[1, 2]", "one JSON object per line"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, bad_line, expected):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(_moon(0, 10, 2, [0])) + "\n\n" + bad_line + "\n")
    msg = _error(f"trace:{p}")
    assert f"{p}:3:" in msg and expected in msg, msg


@pytest.mark.parametrize("text, expected", [
    ("arrival_s,input_tokens\n0,1\n", ":1: CSV header lacks output_tokens"),
    ("arrival_s,input_tokens,output_tokens\n0,5,1\n1,5\n", ":3: expected 3"),
    ("arrival_s,input_tokens,output_tokens\n0,5,1\n1,5,1,9\n", ":3: expected 3"),
    ("arrival_s,input_tokens,output_tokens\n0,five,1\n", ":2: input_tokens must be"),
    ("arrival_s,input_tokens,output_tokens\n-0.5,5,1\n", ":2: arrival_s must not be negative"),
    ("arrival_s,input_tokens,output_tokens,prefix_tokens\n0,5,1,3\n",
     ":2: prefix_tokens needs a prefix_group"),
])
def test_bad_csv_rows_name_the_file_and_line(tmp_path, text, expected):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    msg = _error(f"trace:{p}")
    assert str(p) in msg and expected in msg, msg


def test_file_level_errors_name_the_file(tmp_path):
    assert "nope.jsonl: trace file not found" in _error(f"trace:{tmp_path}/nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    assert "empty.jsonl: empty trace" in _error(f"trace:{tmp_path}/empty.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b'{"a": 1}\n\xff\xfe\n')
    assert "bin.jsonl:2: not UTF-8" in _error(f"trace:{tmp_path}/bin.jsonl")


def test_too_long_for_max_model_len_names_the_line(tmp_path):
    p = _jsonl(tmp_path, [_moon(0, 100, 10, [0]), _moon(5, 4000, 200, list(range(1, 9)))])
    msg = _error(f"trace:{p}")
    assert f"{p}:2:" in msg and "exceed max_model_len 4096" in msg, msg
    assert f"{p}:1:" in _error(f"trace:{p}?cap=64&max_model_len=128")
    assert len(load_trace_workload(f"trace:{p}?max_model_len=8192").requests) == 2


@pytest.mark.parametrize("query, expected", [
    ("?colour=red", "unknown option 'colour'"),
    ("?count=0", "count='0' must be an integer >= 1"),
    ("?start=x", "start='x' must be an integer"),
    ("?rate_scale=0", "rate_scale='0' must be a number > 0"),
    ("?rate_scale=2&time_scale=2", "not both"),
    ("?cap=pow3", "cap='pow3' must be an integer"),
    ("?model=gpt", "model='gpt' must be one of"),
    ("?skip_bad=yes", "skip_bad='yes' must be 0 or 1"),
    ("?count", "is not key=value"),
    ("?count=1&count=2", "given twice"),
    ("?start=9", "past the 4 usable rows"),
])
def test_bad_options_name_the_spec(moon, query, expected):
    msg = _error(f"trace:{moon}{query}")
    assert str(moon) in msg and expected in msg, msg


def test_skip_bad_skips_and_counts_malformed_rows(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(_moon(0, 10, 2, [0])) + "\n{oops\n"
                 + json.dumps(_moon(5, -1, 2, [])) + "\n" + json.dumps(_moon(9, 20, 2, [0])) + "\n")
    load = load_trace(f"trace:{p}?skip_bad=1")
    assert len(load.workload.requests) == 2
    assert [s.line for s in load.skipped] == [2, 3]
    assert "malformed JSON" in load.skipped[0].reason
    assert "skipped 2 bad rows" in load.workload.description
    assert f"{p}:2:" in _error(f"trace:{p}")


def test_parse_spec_defaults_depend_on_the_model():
    _, full = parse_spec("trace:x.jsonl")
    _, tiny = parse_spec("trace:x.jsonl?model=tiny&rate_scale=4&length_scale=0.125")
    assert (full.max_model_len, full.cap, full.block, full.time_scale) == (4096, None, 512, 1.0)
    assert (tiny.max_model_len, tiny.time_scale, tiny.length_scale) == (512, 0.25, 0.125)


@pytest.mark.parametrize("name", ["chat", "agent"])
def test_sample_traces_fit_full_size_and_tiny(name):
    full = load_trace_workload(f"trace:{SAMPLES / name}.jsonl")
    assert 200 <= len(full.requests) <= 400
    assert all(len(r.prompt_token_ids) + r.max_tokens <= 4096 for r in full.requests)
    assert all(r.output_len is not None and 1 <= r.output_len <= r.max_tokens
               for r in full.requests)
    assert 30 <= full.requests[-1].arrival_s <= 300
    tiny = load_trace_workload(f"trace:{SAMPLES / name}.jsonl?model=tiny&length_scale=1/8")
    assert all(len(r.prompt_token_ids) + r.max_tokens <= 512 for r in tiny.requests)
    # prompts share prefixes: many requests start like some earlier one
    starts = [r.prompt_token_ids[:64] for r in full.requests]
    assert len(set(starts)) < len(starts) / 2
    assert (SAMPLES / f"{name}.jsonl").stat().st_size < 100_000


def test_deployment_options_become_engine_overrides() -> None:
    from fitness.traces import load_trace_workload

    wl = load_trace_workload("trace:scripts/traces/chat.jsonl?count=8&num_kv_blocks=512"
                             "&max_num_seqs=4")
    assert wl.engine_overrides == {"max_model_len": 4096, "num_kv_blocks": 512,
                                   "max_num_seqs": 4}
    plain = load_trace_workload("trace:scripts/traces/chat.jsonl?count=8")
    assert plain.content_hash != wl.content_hash and "num_kv_blocks" not in \
        plain.engine_overrides
