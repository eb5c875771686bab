"""JanusVLNModel on tiny sizes: the seam with transformers' Qwen2.5-VL, the fusion, training."""

import pytest
import torch
from janus_test_utils import frames, small_cfg, tokenizer_for
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
)

from janus_core.compat import image_token_types, vision_output
from janus_core.config import load_config
from janus_core.model import VGGTMerger, build_model, qwen_config
from janus_core.processor import (
    IGNORE_INDEX,
    JanusProcessor,
    compute_geometry,
    qwen_crop,
    qwen_pixel_values,
    regroup_vggt_features,
    to_tensor,
)


def _setup(seed=0, **changes):
    cfg = small_cfg(**changes)
    torch.manual_seed(seed)
    model = build_model(cfg, device="cpu")
    proc = JanusProcessor(cfg, tokenizer_for(cfg))
    resized = [proc.preprocess_frame(f) for f in frames(cfg, 3, seed=seed)]
    return cfg, model, proc, resized


def _inputs(proc, resized, n_images):
    pv, grid = proc.qwen_inputs(resized[-n_images:])
    ids = proc.prompt_ids("walk past the table and stop at the door.", n_images)
    vggt = torch.stack([proc.vggt_input(f) for f in resized[-n_images:]])
    return ids, pv, grid, vggt


# ---- sizes ----------------------------------------------------------------------------------
def test_full_size_parameter_counts_on_meta():
    model = build_model(load_config("full"), device="cpu", dtype="bfloat16", empty=True)
    count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
    assert count(model.qwen.parameters()) == 8_292_166_656  # Qwen2.5-VL-7B-Instruct
    assert count(model.vggt.parameters()) == 909_112_320  # VGGT-1B aggregator
    assert count(model.merger.parameters()) == 48_244_224  # digest §1.2
    assert all(p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())  # rotary / normalisation buffers are real
    hf = qwen_config(load_config("full"))
    assert isinstance(hf, Qwen2_5_VLConfig)
    assert (hf.text_config.hidden_size, hf.text_config.num_hidden_layers) == (3584, 28)
    assert hf.vision_config.out_hidden_size == 3584 and hf.vision_config.depth == 32
    assert hf.text_config.rope_scaling["mrope_section"] == [16, 24, 24]


def test_merger_structure():
    merger = VGGTMerger(8, 16, 12)
    assert [n for n, _ in merger.named_parameters()] == [
        "ln_q.weight", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"
    ]
    x = torch.randn(5, 4 * 8)
    normed = x.view(5, 4, 8) * torch.rsqrt(x.view(5, 4, 8).pow(2).mean(-1, keepdim=True) + 1e-6)
    expected = merger.mlp(normed.reshape(5, 32))  # RMSNorm per 2048-d token, then flatten
    torch.testing.assert_close(merger(x), expected)


def test_bf16_build_keeps_float32_buffers_and_runs():
    cfg, _, proc, resized = _setup()
    model = build_model(cfg, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.merger.mlp[0].weight.dtype == torch.bfloat16
    assert next(model.vggt.parameters()).dtype == torch.bfloat16
    assert model.vggt.aggregator._resnet_mean.dtype == torch.float32
    assert model.qwen.model.language_model.rotary_emb.inv_freq.dtype == torch.float32
    ids, pv, grid, vggt = _inputs(proc, resized, 2)
    out = model(ids, pv, grid, vggt_frames=[vggt])
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


# ---- the seam with transformers ----------------------------------------------------------------
def test_without_vggt_our_path_equals_stock_qwen_forward_and_generate():
    cfg, model, proc, resized = _setup(use_vggt=False)
    assert model.vggt is None and model.merger is None
    ids, pv, grid, _ = _inputs(proc, resized, 3)
    types = image_token_types(ids, cfg.qwen.image_token_id)  # transformers >= 5.5 needs them
    ours = model(ids, pv, grid).logits
    stock = model.qwen(input_ids=ids, pixel_values=pv, image_grid_thw=grid, **types).logits
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-5)

    eos = cfg.qwen.eos_token_id
    embeds = model.embed(ids, model.encode_images(pv, grid))
    tokens = model.greedy_generate(ids, embeds, grid, max_new_tokens=6, eos_token_ids=[eos])
    ref = model.qwen.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pv,
        image_grid_thw=grid, **types, max_new_tokens=6, do_sample=False, eos_token_id=eos,
        pad_token_id=cfg.qwen.pad_token_id,
    )
    assert tokens == ref[0, ids.shape[1] :].tolist()


def test_fusion_adds_lam_times_the_current_frame_block_to_every_image():
    """Our fused forward == stock Qwen forward with ``lam * tile(block)`` added to the ViT output.

    The stock path embeds, scatters and computes mRoPE positions itself, so this checks our
    inputs_embeds/position_ids seam and the tiling (the current frame's block on all images).
    """
    cfg, model, proc, resized = _setup(lam=0.7)
    ids, pv, grid, vggt = _inputs(proc, resized, 3)
    types = image_token_types(ids, cfg.qwen.image_token_id)
    block = model.encode_vggt(vggt)  # frames streamed through a fresh cache, last one kept
    assert block.shape == (12, cfg.qwen.hidden_size)
    ours = model(ids, pv, grid, vggt_frames=[vggt]).logits

    def add_block(_module, _inputs, out):  # a tensor (transformers 4.x) or a ModelOutput (5.x)
        if isinstance(out, torch.Tensor):
            return out + 0.7 * block.repeat(3, 1)
        out.pooler_output = vision_output(out) + 0.7 * block.repeat(3, 1)
        return out

    hook = model.qwen.model.visual.register_forward_hook(add_block)
    try:
        stock = model.qwen(input_ids=ids, pixel_values=pv, image_grid_thw=grid, **types).logits
    finally:
        hook.remove()
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-5)

    plain = model.qwen(input_ids=ids, pixel_values=pv, image_grid_thw=grid, **types).logits
    assert not torch.allclose(ours, plain, atol=1e-3)  # VGGT really changes the output
    zero = build_model(cfg.replace(lam=0.0), device="cpu")
    zero.load_state_dict(model.state_dict())
    torch.testing.assert_close(zero(ids, pv, grid, vggt_frames=[vggt]).logits, plain,
                               rtol=0, atol=1e-5)


def test_vggt_block_is_the_last_frame_after_streaming_the_others_through_the_cache():
    cfg, model, proc, resized = _setup()
    with torch.no_grad():  # random init: LayerScale 0.01 would hide the cross-frame attention
        for block in model.vggt.aggregator.global_blocks:
            block.ls1.gamma.fill_(1.0)
    vggt = torch.stack([proc.vggt_input(f) for f in resized])
    cache = model.new_spatial_cache()
    for frame in vggt[:-1]:
        model.encode_vggt(frame, cache)
    assert cache.frames_seen == 2
    streamed = model.encode_vggt(vggt[-1], cache)
    assert cache.frames_seen == 3
    torch.testing.assert_close(model.encode_vggt(vggt), streamed)  # fresh cache, same stream
    alone = model.encode_vggt(vggt[-1])  # no memory of frames 0, 1
    assert not torch.allclose(alone, streamed, atol=1e-4)


def test_vggt_features_are_layer_minus_2_patch_tokens_regrouped():
    cfg, model, proc, resized = _setup()
    frame = proc.vggt_input(resized[0])
    outputs, start = model.vggt.aggregator(frame[None, None], model.new_spatial_cache())
    expected = regroup_vggt_features(outputs[-2][0, 0, start:], model.geometry)
    torch.testing.assert_close(model.vggt_features(frame), expected)
    assert expected.shape == (12, 4 * cfg.vggt.feature_dim)


def test_qwen_vit_merged_token_order_matches_the_vggt_regroup():
    """Perturb one 14x14 patch; exactly the merged token the regroup assigns it changes."""
    g = compute_geometry(640, 480)
    vision = Qwen2_5_VLConfig(vision_config={
        "depth": 0, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
        "out_hidden_size": 8, "window_size": 112, "fullatt_block_indexes": [],
    }).vision_config
    torch.manual_seed(0)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(vision).eval()
    image = torch.rand(3, g.qwen_height, g.qwen_width)
    pv, grid = qwen_pixel_values([image])
    with torch.no_grad():
        base = vision_output(tower(pv, grid_thw=grid))
    assert base.shape == (391, 8)
    hv, wv = g.vggt_grid
    positions = torch.arange(hv * wv, dtype=torch.float32)[:, None]  # token id = r * wv + c
    regrouped = regroup_vggt_features(positions, g)  # [391, 4]
    for r, c in [(0, 0), (0, 1), (1, 0), (5, 30), (33, 45), (20, 13)]:
        bumped = image.clone()
        bumped[:, 14 * r : 14 * r + 14, 14 * c : 14 * c + 14] += 0.5
        with torch.no_grad():
            out = vision_output(tower(qwen_pixel_values([bumped])[0], grid_thw=grid))
        changed = (out - base).abs().sum(-1).nonzero().flatten().tolist()
        row, slot = (regrouped == r * wv + c).nonzero().flatten().tolist()
        assert changed == [row] and row == (r // 2) * 23 + c // 2 and slot == (r % 2) * 2 + c % 2


# ---- training --------------------------------------------------------------------------------
def test_forward_backward_trains_llm_and_both_mergers_only():
    cfg, model, proc, resized = _setup()
    n = model.set_trainable()
    groups = model.parameter_groups()
    assert n == sum(p.numel() for g in ("llm", "merger") for _, p in groups[g])
    assert {name for name, _ in groups["merger"]} >= {"merger.mlp.0.weight",
                                                      "qwen.model.visual.merger.mlp.0.weight"}
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    model.train()
    assert model.training and not model.vggt.training  # VGGT always in eval mode

    ids, labels = proc.train_sample("walk past the table.", 2, "TURN_LEFT")
    pv, grid = proc.qwen_inputs(resized[-2:])
    vggt = torch.stack([proc.vggt_input(f) for f in resized[-2:]])
    out = model(ids[None], pv, grid, vggt_frames=[vggt], labels=labels[None])
    logits = out.logits[0, :-1].float()
    target = labels[1:]
    keep = target != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["merger.mlp.0.weight"] is not None and grads["merger.mlp.0.weight"].abs().sum() > 0
    assert grads["qwen.model.visual.merger.mlp.0.weight"] is not None
    assert grads["qwen.lm_head.weight"] is not None
    assert grads["qwen.model.language_model.embed_tokens.weight"] is not None
    assert grads["qwen.model.visual.blocks.0.attn.qkv.weight"] is None
    assert all(p.grad is None for p in model.vggt.parameters())


def test_batch_rows_with_different_image_counts_match_single_rows():
    cfg, model, proc, resized = _setup()
    pad = cfg.qwen.pad_token_id
    rows = []
    for n in (1, 2):
        ids, pv, grid, vggt = _inputs(proc, resized, n)
        rows.append((ids[0], pv, grid, vggt, model(ids, pv, grid, vggt_frames=[vggt]).logits[0]))
    length = max(r[0].shape[0] for r in rows)
    ids = torch.full((2, length), pad)
    mask = torch.zeros(2, length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : r[0].shape[0]] = r[0]
        mask[i, : r[0].shape[0]] = 1
    out = model(ids, torch.cat([r[1] for r in rows]), torch.cat([r[2] for r in rows]),
                vggt_frames=[r[3] for r in rows], attention_mask=mask).logits
    for i, r in enumerate(rows):
        torch.testing.assert_close(out[i, : r[0].shape[0]], r[4], rtol=0, atol=1e-4)


# ---- errors ---------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    cfg, model, proc, resized = _setup()
    ids, pv, grid, vggt = _inputs(proc, resized, 2)
    with pytest.raises(ValueError, match=r"VGGT frames must be \[S, 3, 98, 126\]"):
        model.encode_vggt(torch.zeros(1, 3, 84, 112))
    with pytest.raises(ValueError, match="vggt_frames or vggt_embeds"):
        model(ids, pv, grid)
    with pytest.raises(ValueError, match="24 <\\|image_pad\\|> tokens, 12 feature rows"):
        model.embed(ids, torch.zeros(12, cfg.qwen.hidden_size))
    with pytest.raises(ValueError, match="cannot tile"):
        model.fuse(torch.zeros(24, 4), torch.zeros(5, 4), 2)
    with pytest.raises(ValueError, match="one prompt"):
        model.greedy_generate(ids.repeat(2, 1), None, grid)


def test_to_tensor_input_is_what_qwen_crop_and_vggt_share():
    cfg, model, proc, resized = _setup()
    t = to_tensor(resized[0])
    assert torch.equal(proc.vggt_input(resized[0]), t)
    pv, _ = proc.qwen_inputs(resized[:1])
    assert torch.equal(pv, qwen_pixel_values([qwen_crop(t, proc.geometry)])[0])
