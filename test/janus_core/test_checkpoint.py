"""Checkpoints in the release's layout: key map, loud failures, bit-exact round trips."""

import json

import pytest
import torch
from janus_test_utils import small_cfg, tokenizer_for
from safetensors.torch import load_file, save_file

from janus_core.checkpoint import (
    INDEX_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    config_from_checkpoint,
    load_model,
    parse_size,
    release_config_dict,
    save_checkpoint,
)
from janus_core.config import load_config
from janus_core.model import build_model, qwen_config
from janus_core.tokenizer import load_chat_template, load_tokenizer


@pytest.fixture(scope="module")
def tiny():
    cfg = small_cfg()
    torch.manual_seed(0)
    return cfg, build_model(cfg, device="cpu"), tokenizer_for(cfg)


def _save(tmp_path, tiny, shard="300KB", name="ckpt"):
    cfg, model, tok = tiny
    return save_checkpoint(model, tok, cfg, tmp_path / name, max_shard_size=shard)


def _all_tensors(path):
    files = sorted(path.glob("model*.safetensors"))
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


def _rewrite(path, tensors):
    """Replace the weights of a checkpoint folder by one model.safetensors holding ``tensors``."""
    for f in path.glob("model*.safetensors"):
        f.unlink()
    (path / INDEX_NAME).unlink(missing_ok=True)
    save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


# ---- layout and round trip ---------------------------------------------------------------------
def test_saved_layout_is_the_release_layout(tmp_path, tiny):
    path = _save(tmp_path, tiny)
    index = json.loads((path / INDEX_NAME).read_text())
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    n = len(shards)
    assert n > 1 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert set(index["weight_map"].values()) == set(shards)
    keys = set(index["weight_map"])
    assert keys == set(_all_tensors(path))
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in _all_tensors(path).values()
    )
    # transformers-4.50 names, as the release saved them
    for key in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                "model.norm.weight", "lm_head.weight", "visual.patch_embed.proj.weight",
                "visual.blocks.1.attn.qkv.weight", "visual.merger.mlp.0.weight",
                "vggt.aggregator.patch_embed.pos_embed", "vggt.aggregator.camera_token",
                "vggt.aggregator.global_blocks.1.attn.k_norm.weight",
                "merger.ln_q.weight", "merger.mlp.0.weight", "merger.mlp.2.bias"]:
        assert key in keys, key
    assert not any(k.startswith(("qwen.", "model.language_model.", "model.visual.")) for k in keys)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["lam"] == 0.2
    assert config["reference_frame"] == "first" and config["vggt_merger_hidden_dim"] == 64
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGenerationForJanusVLN"]
    assert config["vision_config"]["depth"] == 2 and config["hidden_size"] == 64
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.json",
                 "preprocessor_config.json", "generation_config.json"]:
        assert (path / name).exists(), name


def test_round_trip_is_bit_exact(tmp_path, tiny):
    cfg, model, tok = tiny
    path = _save(tmp_path, tiny)
    assert config_from_checkpoint(path) == cfg
    loaded = load_model(path, device="cpu")
    _assert_same_weights(model, loaded)
    back = load_tokenizer(path, cfg)
    text = "Walk to the door.<|im_end|>"
    assert back(text)["input_ids"] == tok(text)["input_ids"]
    assert load_chat_template(path) == tok.chat_template
    # and once more from the loaded model: identical files
    again = save_checkpoint(loaded, back, cfg, tmp_path / "again", max_shard_size="300KB")
    first, second = _all_tensors(path), _all_tensors(again)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_bf16_round_trip_and_single_file(tmp_path, tiny):
    cfg = tiny[0]
    model = build_model(cfg, device="cpu", dtype="bfloat16")
    path = save_checkpoint(model, tiny[2], cfg, tmp_path / "bf16", max_shard_size="1GB")
    assert (path / WEIGHTS_NAME).exists() and not (path / INDEX_NAME).exists()
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    loaded = load_model(path, device="cpu", dtype="bfloat16")
    _assert_same_weights(model, loaded)
    as_fp32 = load_model(path, device="cpu", dtype="float32")  # cast on load
    assert as_fp32.dtype == torch.float32
    assert torch.equal(as_fp32.merger.mlp[0].weight, model.merger.mlp[0].weight.float())


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("300KB") == 300_000
    assert parse_size("2GiB") == 2 * 2**30 and parse_size(1234) == 1234
    with pytest.raises(ValueError):
        parse_size("five gigs")


# ---- the key map -----------------------------------------------------------------------------
def test_unused_vggt_heads_are_dropped(tmp_path, tiny):
    cfg, model, _ = tiny
    path = _save(tmp_path, tiny)
    tensors = _all_tensors(path)
    tensors["vggt.depth_head.projects.0.weight"] = torch.zeros(4, 4)
    tensors["vggt.point_head.scratch.output_conv2.2.bias"] = torch.zeros(4)
    tensors["vggt.camera_head.trunk.0.norm1.weight"] = torch.zeros(4)
    _rewrite(path, tensors)
    _assert_same_weights(model, load_model(path, device="cpu"))


def test_newer_transformers_prefixes_load(tmp_path, tiny):
    cfg, model, _ = tiny
    path = _save(tmp_path, tiny)
    renamed = {}
    for key, t in _all_tensors(path).items():
        if key.startswith("model."):
            key = "model.language_model." + key[len("model."):]
        elif key.startswith("visual."):
            key = "model.visual." + key[len("visual."):]
        renamed[key] = t
    _rewrite(path, renamed)
    _assert_same_weights(model, load_model(path, device="cpu"))


def test_renamed_key_fails_naming_both_sides(tmp_path, tiny):
    path = _save(tmp_path, tiny)
    tensors = _all_tensors(path)
    tensors["merger.mlp.1.weight"] = tensors.pop("merger.mlp.0.weight")  # off-by-one rename
    _rewrite(path, tensors)
    with pytest.raises(CheckpointError) as err:
        load_model(path, device="cpu")
    msg = str(err.value)
    assert "1 missing" in msg and "merger.mlp.0.weight" in msg
    assert "1 unexpected" in msg and "merger.mlp.1.weight" in msg


def test_missing_key_fails_naming_it(tmp_path, tiny):
    path = _save(tmp_path, tiny)
    tensors = _all_tensors(path)
    del tensors["vggt.aggregator.global_blocks.1.attn.qkv.weight"]
    _rewrite(path, tensors)
    with pytest.raises(CheckpointError, match=r"1 missing .*vggt\.aggregator\.global_blocks\.1\."
                                              r"attn\.qkv\.weight"):
        load_model(path, device="cpu")


def test_stray_key_fails(tmp_path, tiny):
    path = _save(tmp_path, tiny)
    tensors = _all_tensors(path)
    tensors["classifier.weight"] = torch.zeros(2)  # e.g. VG-LLM's grounding head
    _rewrite(path, tensors)
    with pytest.raises(CheckpointError, match="unexpected .*classifier.weight"):
        load_model(path, device="cpu")


def test_shape_mismatch_names_the_key(tmp_path, tiny):
    path = _save(tmp_path, tiny)
    tensors = _all_tensors(path)
    tensors["merger.mlp.2.weight"] = torch.zeros(64, 32)
    _rewrite(path, tensors)
    match = r"merger\.mlp\.2\.weight .*\[64, 32\], model \[64, 64\]"
    with pytest.raises(CheckpointError, match=match):
        load_model(path, device="cpu")


def test_old_and_new_names_for_one_tensor_conflict(tmp_path, tiny):
    path = _save(tmp_path, tiny)
    tensors = _all_tensors(path)
    tensors["model.language_model.norm.weight"] = tensors["model.norm.weight"].clone()
    _rewrite(path, tensors)
    match = "both map to 'qwen.model.language_model.norm.weight'"
    with pytest.raises(CheckpointError, match=match):
        load_model(path, device="cpu")


def test_ablation_model_ignores_the_vggt_weights(tmp_path, tiny):
    cfg, model, _ = tiny
    path = _save(tmp_path, tiny)
    loaded = load_model(path, device="cpu", cfg=cfg.replace(use_vggt=False))
    assert loaded.vggt is None
    assert torch.equal(loaded.qwen.lm_head.weight, model.qwen.lm_head.weight)


# ---- refusing pickles and broken folders -------------------------------------------------
def test_pickled_weights_are_refused_never_unpickled(tmp_path, tiny, monkeypatch):
    path = _save(tmp_path, tiny)
    for f in path.glob("model*.safetensors"):
        f.unlink()
    (path / INDEX_NAME).unlink()
    (path / "pytorch_model.bin").write_bytes(b"not even a pickle")

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(CheckpointError, match=r"pickled weights \['pytorch_model.bin'\]; refusing"):
        load_model(path, device="cpu")


def test_broken_folders(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope", device="cpu")
    path = _save(tmp_path, tiny)
    shard = sorted(path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"do not exist: \\['{shard.name}'\\]"):
        load_model(path, device="cpu")
    (path / INDEX_NAME).unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors.index.json"):
        load_model(path, device="cpu")
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        config_from_checkpoint(path)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="expected 'qwen2_5_vl'"):
        config_from_checkpoint(path)


# ---- config.json ---------------------------------------------------------------------------------
def _release_style_config(cfg):
    """What the release's config.json looks like: Qwen fields + lam/reference_frame, no janus."""
    data = release_config_dict(cfg, torch.bfloat16)
    for key in ("janus_config", "use_vggt_feature", "vggt_merger_hidden_dim"):
        del data[key]
    return data


def test_release_config_without_our_keys(tmp_path):
    full = load_config("full")
    data = _release_style_config(full)
    data["lam"] = 0.3
    (tmp_path / "config.json").write_text(json.dumps(data))
    cfg = config_from_checkpoint(tmp_path)
    assert cfg.qwen == full.qwen and cfg.vggt == full.vggt and cfg.memory == full.memory
    assert cfg.lam == 0.3 and cfg.merger_hidden_dim == 4096 and cfg.use_vggt
    data["use_vggt_feature"], data["vggt_merger_hidden_dim"] = False, 2048
    (tmp_path / "config.json").write_text(json.dumps(data))
    cfg = config_from_checkpoint(tmp_path)
    assert not cfg.use_vggt and cfg.merger_hidden_dim == 2048
    del data["vision_config"]["depth"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="vision_config.*'depth'"):
        config_from_checkpoint(tmp_path)


def test_nested_text_config_layout_reads_the_same(tmp_path):
    full = load_config("full")
    data = qwen_config(full).to_dict()  # transformers 4.57 save layout (nested text_config)
    assert "text_config" in data
    data["lam"] = 0.2
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert config_from_checkpoint(tmp_path).qwen == full.qwen
