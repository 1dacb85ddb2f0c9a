"""Model presets and HF folders: config round trip, transformers loads what we save, the
Llama and Qwen2 variants match transformers, and bad folders fail clearly."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch

from runtime_modules import LLM, ModelConfig, SamplingParams
from runtime_modules.models import save_pretrained


def test_saved_config_is_transformers_5_style_and_round_trips(tiny_hf_dir):
    d = json.loads((tiny_hf_dir / "config.json").read_text())
    assert d["model_type"] == "qwen3" and d["architectures"] == ["Qwen3ForCausalLM"]
    assert d["rope_parameters"] == {"rope_type": "default", "rope_theta": 1e6}
    assert d["initializer_range"] == 0.3
    loaded = ModelConfig.from_hf(tiny_hf_dir)
    assert replace(loaded, extra={}) == ModelConfig.from_name("tiny")
    assert loaded.extra["architectures"] == ["Qwen3ForCausalLM"]


def test_qwen3_06b_preset_is_the_real_architecture():
    c = ModelConfig.from_name("qwen3-0.6b")
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
            c.num_key_value_heads, c.head_dim, c.vocab_size) == (1024, 3072, 28, 16, 8, 128,
                                                                 151936)
    assert c.tie_word_embeddings and c.qk_norm and c.rope_theta == 1e6


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_llama_and_qwen2_variants_match_transformers(tmp_path, model_type):
    from transformers import AutoModelForCausalLM, GenerationConfig
    cfg = replace(ModelConfig.from_name("tiny"), model_type=model_type, qk_norm=False,
                  attention_bias=model_type == "qwen2",
                  tie_word_embeddings=model_type == "qwen2")
    path = save_pretrained(cfg, tmp_path / model_type, seed=3)
    rng = random.Random(model_type)
    prompts = [[rng.randrange(1024) for _ in range(n)] for n in (4, 19)]
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    gc = GenerationConfig(do_sample=False, max_new_tokens=6, min_new_tokens=6,
                          eos_token_id=None, pad_token_id=0)
    llm = LLM(path, device="cpu", max_model_len=64, block_size=8)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    for p, o in zip(prompts, outs):
        ids = torch.tensor([p])
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gc)
        assert o.token_ids == ref[0, len(p):].tolist()


def test_bad_model_folders_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        LLM(str(tmp_path / "missing"), device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        LLM(tmp_path, device="cpu")


def test_bad_engine_params_and_prompts_fail_clearly():
    with pytest.raises(ValueError, match="block_size must be a power of two, got 12"):
        LLM("tiny", device="cpu", block_size=12)
    with pytest.raises(ValueError, match="max_num_seqs must be a positive integer, got 0"):
        LLM("tiny", device="cpu", max_num_seqs=0)
    llm = LLM("tiny", device="cpu", max_model_len=32, num_kv_blocks=8)
    with pytest.raises(ValueError, match="outside"):
        llm.add_request([5, 2000])
    with pytest.raises(ValueError, match="tokenizer"):
        llm.add_request("hello")
    with pytest.raises(ValueError, match="does not fit max_model_len"):
        llm.add_request(list(range(2, 40)))
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_a_bad_prompt_in_generate_queues_none_of_the_batch():
    llm = LLM("tiny", device="cpu", max_model_len=32, num_kv_blocks=8)
    sp = SamplingParams(temperature=0, max_tokens=4)
    with pytest.raises(ValueError, match="empty"):
        llm.generate([[5, 6, 7], [8, 9], []], sp)
    assert not llm.has_unfinished()
    out = llm.generate([[5, 6, 7]], sp)  # the engine still works, with no strays
    assert len(out) == 1 and len(out[0].token_ids) == 4
    assert llm.stats["generated_tokens"] == 4


def test_a_request_that_cannot_fit_the_kv_cache_alone_is_refused_clearly():
    llm = LLM("tiny", device="cpu", max_model_len=256, num_kv_blocks=4, block_size=8)
    with pytest.raises(ValueError, match=r"KV for 39 tokens .* 4 blocks of 8 = 32 tokens"):
        llm.add_request(list(range(2, 32)), SamplingParams(max_tokens=10))
    assert not llm.has_unfinished()
    out = llm.generate([list(range(2, 30))], SamplingParams(temperature=0, max_tokens=5,
                                                            ignore_eos=True))
    assert len(out[0].token_ids) == 5  # 32 tokens, KV for 32: just fits
