"""The engine follows the model: max_model_len defaults to the model's
max_position_embeddings (as in vLLM), and only a length the user asked for beyond it fails."""

from __future__ import annotations

import dataclasses
import json

import pytest

from runtime_modules import LLM, ModelConfig
from runtime_modules.stub import StubRunner


@pytest.fixture
def short_model(tmp_path):
    """A Hugging Face style folder (config only) whose model allows 1024 positions."""
    mc = dataclasses.replace(ModelConfig.from_name("tiny"), max_position_embeddings=1024)
    (tmp_path / "config.json").write_text(json.dumps(mc.to_hf()))
    return tmp_path


def test_default_max_model_len_is_the_models_limit(short_model):
    llm = LLM(str(short_model), runner_factory=StubRunner, device="cpu")
    assert llm.config.max_model_len == 1024


def test_a_shorter_length_is_kept(short_model):
    llm = LLM(str(short_model), runner_factory=StubRunner, device="cpu", max_model_len=512)
    assert llm.config.max_model_len == 512


def test_asking_for_more_than_the_model_allows_is_refused(short_model):
    with pytest.raises(ValueError, match="max_model_len=2048 exceeds the model's "
                                         "max_position_embeddings=1024"):
        LLM(str(short_model), runner_factory=StubRunner, device="cpu", max_model_len=2048)
