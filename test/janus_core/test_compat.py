"""janus_core.compat on the installed transformers (scripts/test_compat.sh: 4.57 and 5.x).

The model, streaming, checkpoint and golden tests go through these helpers too; these check the
helpers' own contracts.
"""

import inspect

import pytest
import torch
from janus_test_utils import small_cfg
from torch import nn
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen_modeling

from janus_core import compat
from janus_core.model import build_model
from janus_core.processor import qwen_pixel_values


class _WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.register_buffer("table", torch.arange(5.0))


def test_empty_parameters_puts_parameters_on_meta_and_keeps_buffers():
    original = nn.Module.register_parameter
    with compat.empty_parameters():
        module = _WithBuffer()
    assert nn.Module.register_parameter is original  # restored
    assert all(p.is_meta for p in module.parameters())
    assert module.linear.weight.shape == (3, 4) and module.linear.weight.requires_grad
    assert not module.frozen.requires_grad
    assert not module.table.is_meta and module.table.tolist() == [0, 1, 2, 3, 4]
    assert not _WithBuffer().linear.weight.is_meta  # outside the block: real


def test_image_features_and_vision_output_are_the_merged_tokens():
    torch.manual_seed(0)
    model = build_model(small_cfg(use_vggt=False), device="cpu")
    pixel_values, grid = qwen_pixel_values([torch.rand(3, 84, 112), torch.rand(3, 84, 112)])
    with torch.no_grad():
        features = compat.image_features(model.qwen.model, pixel_values, grid)
        tower = compat.vision_output(model.qwen.model.visual(pixel_values, grid_thw=grid))
    assert features.shape == (24, model.cfg.qwen.hidden_size)  # 2 images x 12 merged tokens
    torch.testing.assert_close(features, tower)


def test_rope_index_numbers_text_like_transformers_does():
    model = build_model(small_cfg(use_vggt=False), device="cpu")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    positions, deltas = compat.rope_index(model.qwen.model, ids, None)
    assert positions.shape == (3, 1, 5) and deltas.tolist() == [[0]]
    assert (positions == torch.arange(5)).all()
    types = compat.image_token_types(ids, 3)  # empty where input_ids alone place images (4.x)
    assert not types or types["mm_token_type_ids"].tolist() == [[0, 0, 1, 0, 0]]


class _OurCache:
    def __init__(self):
        self.calls = []

    def update(self, key_states, value_states, layer_idx):  # our caches' one signature
        self.calls.append(layer_idx)
        return key_states, value_states

    def get_seq_length(self, layer_idx=0):
        return 7


def test_cache_arguments_use_this_versions_name_and_any_update_call():
    names = set(inspect.signature(qwen_modeling.Qwen2_5_VLTextModel.forward).parameters)
    ours = _OurCache()
    args = compat.cache_arguments(ours, torch.arange(3), own_cache=True)
    (key,) = [k for k in args if k in ("cache", "past_key_values")]
    assert key in names and ("cache_position" in args) == ("cache_position" in names)
    wrapped = args[key]
    k = torch.zeros(1, 2, 3, 4)
    wrapped.update(k, k, 0)  # transformers 5.5+
    wrapped.update(k, k, 1, {"cache_position": None})  # 4.x, 5.0
    wrapped.update(k, k, 2, kwargs={})  # 5.25+
    assert ours.calls == [0, 1, 2] and wrapped.get_seq_length() == 7
    plain = compat.cache_arguments("theirs")
    assert list(plain.values()) == ["theirs"]


def test_training_arguments_take_the_4_57_names(tmp_path):
    pytest.importorskip("accelerate", reason="the Trainer needs the training extra")
    args = compat.training_arguments(output_dir=str(tmp_path), warmup_ratio=0.1,
                                     save_safetensors=True, use_cpu=True, report_to=[])
    assert args.get_warmup_steps(100) == 10 and getattr(args, "save_safetensors", True)
