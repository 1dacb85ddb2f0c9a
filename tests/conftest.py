"""Shared fixtures: a printed, replayable seed for every test's random choices; the `tiny`
preset saved as a Hugging Face folder (fp32, seeded)."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _seeded_random(request: pytest.FixtureRequest) -> None:
    """Seed the global `random` per test, and print the seed: every random choice a test makes
    (directly, or through `random.Random(random.getrandbits(64))`) replays with
    SDS_TEST_SEED=<printed seed>. By default each test has its own fixed seed."""
    seed = int(os.environ.get("SDS_TEST_SEED") or zlib.crc32(request.node.nodeid.encode()))
    random.seed(seed)
    print(f"SDS_TEST_SEED={seed}  ({request.node.nodeid})")


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with config.json + model.safetensors of the `tiny` preset (seed 0, fp32)."""
    import torch

    from runtime_modules.models import save_pretrained
    return save_pretrained("tiny", tmp_path_factory.mktemp("tiny_hf"), seed=0,
                           dtype=torch.float32)
