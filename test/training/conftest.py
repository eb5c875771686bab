"""Fixtures for the training tests: a tiny annotation set and the tiny train config."""

import pytest
import torch
from train_helpers import TRAJECTORIES, write_set

from training.sft import load_train_config


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("tiny_set"), TRAJECTORIES)


@pytest.fixture
def tiny_train_cfg(tiny_set, tmp_path):
    def make(**overrides):
        base = dict(data=[str(tiny_set.root)], output_dir=str(tmp_path / "out"))
        base.update(overrides)
        return load_train_config("config/train_tiny.yaml", **base)
    return make


@pytest.fixture
def one_thread():
    """One torch thread (like each torchrun rank; the same arithmetic anywhere), then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
