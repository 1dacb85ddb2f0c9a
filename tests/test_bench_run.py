"""run_workload on the tiny engine, the transformers peer, and `sds bench` on CPU."""

import csv
import json
import random

import pytest

from evolve.cli import main
from evolve.cli.bench import append_csv
from fitness.bench import build_llm, run_peer, run_workload, summarize_latencies
from fitness.workloads import Request, _finish


def _small(arrivals: bool = False) -> object:
    rng = random.Random(random.getrandbits(64))
    reqs = [Request(tuple(rng.randrange(1024) for _ in range(rng.randint(8, 40))),
                    max_tokens=rng.randint(3, 12),
                    arrival_s=0.05 * i if arrivals else 0.0) for i in range(5)]
    return _finish("test-small", 1, reqs, "tiny", 0, {"max_model_len": 128}, "")


@pytest.mark.parametrize("arrivals", [False, True])
def test_run_workload_counts_every_requested_token(arrivals):
    w = _small(arrivals)
    llm = build_llm(w, max_num_seqs=8)
    r = run_workload(llm, w)
    assert r["output_tokens"] == w.num_output_tokens
    assert r["tok_s"] == pytest.approx(w.num_output_tokens / r["wall_s"])
    assert r["workload_hash"] == w.content_hash
    assert r["steps"] >= max(q.max_tokens for q in w.requests)
    assert 0 < r["ttft_mean_s"] <= r["wall_s"] and r["ttft_p50_s"] <= r["ttft_p90_s"]
    assert r["tpot_mean_s"] > 0 and r["peak_rss_bytes"] > 0
    if arrivals:
        assert r["wall_s"] >= w.requests[-1].arrival_s


def test_latency_summary_from_engine_metrics():
    ms = [{"arrival": 0.0, "first_token": t, "finish": t + 9 * 0.01} for t in (0.1, 0.2, 0.3)]
    s = summarize_latencies(ms, [10, 10, 10])
    assert s["ttft_mean_s"] == pytest.approx(0.2) and s["ttft_p50_s"] == pytest.approx(0.2)
    assert s["tpot_mean_s"] == pytest.approx(0.01)


def test_transformers_peer_runs_the_same_requests():
    w = _small()
    p = run_peer(w, methods=("generate",))
    assert p["peer_method"] == "generate" and p["peer_tok_s"] > 0
    assert p["peer_requests"] == len(w.requests)


def test_sds_bench_on_cpu_prints_and_appends_a_row(tmp_path, capsys):
    from runtime_modules.slots import RuntimeSpec
    path = tmp_path / "bench.csv"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"slots": {"cache_policy": "seed:cache_policy/fifo"}}))
    assert main(["bench", "--no-peer", "--csv", str(path), "--runtime", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "output tok/s" in out and "of the floor" in out
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 1
    r = rows[0]
    assert r["workload"] == "nanovllm-bench-cpu" and r["model"] == "tiny"
    assert 0 < float(r["fraction_of_floor"]) < 1
    assert float(r["tok_s"]) < float(r["floor_tok_s"])
    assert r["torch"] and r["triton"]
    fifo = RuntimeSpec.from_json(spec.read_text()).resolved("cpu").fingerprint()
    assert r["runtime"] == fifo[:16] != RuntimeSpec.default("cpu").resolved("cpu").fingerprint()[:16]
    append_csv({**r, "tok_s": 1.0}, path)
    assert [x["tok_s"] for x in csv.DictReader(path.open())][1] == "1.0"


def test_sds_bench_rejects_a_bad_runtime(capsys):
    assert main(["bench", "--runtime", "{not json", "--no-csv"]) == 2
    assert "--runtime" in capsys.readouterr().err
