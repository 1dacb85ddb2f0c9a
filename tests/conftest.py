"""Shared fixtures: the `tiny` preset saved as a Hugging Face folder (fp32, seeded)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with config.json + model.safetensors of the `tiny` preset (seed 0, fp32)."""
    import torch

    from runtime_modules.models import save_pretrained
    return save_pretrained("tiny", tmp_path_factory.mktemp("tiny_hf"), seed=0,
                           dtype=torch.float32)
