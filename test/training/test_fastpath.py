"""The trajectory-batched path computes what the reference policy computes, step by step."""

import numpy as np
import pytest
import torch

from janus_core.config import ImageConfig, MemoryConfig, load_config
from janus_core.interface import Observation
from janus_core.model import build_model
from janus_core.policy import JanusVLNPolicy
from janus_core.processor import JanusProcessor, sample_history
from janus_core.tokenizer import build_tokenizer
from training.fastpath import (
    FrameEncoder,
    PromptBank,
    build_llm_batch,
    causal_vggt_features,
    frames_to_images,
    llm_hidden,
    merge_vggt,
    qwen_patches,
    regroup_batched,
    vggt_step_features,
    window_mask,
)

# VGGT grid 7x9 (odd on both axes: the bottom/right crop to Qwen's 6x8 grid is exercised)
IMAGE = ImageConfig(input_width=126, input_height=98, target_width=126)


def _cfg(**changes):
    cfg = load_config("tiny").replace(
        image=IMAGE, memory=MemoryConfig(spatial_initial=2, spatial_recent=3, num_history=3))
    return cfg.replace(**changes)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg, device="cpu", dtype="float32")
    tok = build_tokenizer(cfg)
    proc = JanusProcessor(cfg, tok)
    rng = np.random.default_rng(0)
    raw = [rng.integers(0, 256, (98, 126, 3), dtype=np.uint8) for _ in range(9)]
    resized = [proc.preprocess_frame(f) for f in raw]
    return cfg, model, tok, proc, raw, resized


def test_window_mask_is_the_caches_window():
    m = window_mask(8, initial=2, recent=3)
    assert m[7].nonzero().flatten().tolist() == [0, 1, 4, 5, 6, 7]
    assert m[3].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert not m.triu(1).any()


def test_qwen_patches_match_the_processor(setup):
    _, _, _, proc, _, resized = setup
    pv, grid = proc.qwen_inputs(resized[:3])
    images = frames_to_images(torch.from_numpy(np.stack(resized[:3])))
    pv2, grid2 = qwen_patches(images, proc.geometry)
    assert torch.equal(grid, grid2) and torch.allclose(pv, pv2, atol=1e-6)


def test_frame_encoder_equals_the_stock_vision_forward(setup):
    _, model, _, proc, _, resized = setup
    images = frames_to_images(torch.from_numpy(np.stack(resized[:5])))
    pv, grid = qwen_patches(images, proc.geometry)
    enc = FrameEncoder(model)
    with torch.no_grad():
        ref = model.encode_images(pv, grid).view(5, proc.geometry.tokens_per_image, -1)
        torch.testing.assert_close(enc(pv, 5), ref, atol=1e-6, rtol=1e-5)
        patches = proc.geometry.qwen_grid[0] * proc.geometry.qwen_grid[1]
        torch.testing.assert_close(enc(pv[: 2 * patches], 2), ref[:2], atol=1e-6, rtol=1e-5)


def test_causal_vggt_equals_streaming_through_the_cache(setup):
    _, model, _, proc, _, resized = setup
    images = frames_to_images(torch.from_numpy(np.stack(resized)))  # 9 frames > 2 + 3 + 1
    cache = model.new_spatial_cache()
    streamed = [model.vggt_features(img, cache) for img in images]
    batched = causal_vggt_features(model, images[None].repeat(2, 1, 1, 1, 1), chunk=4)
    assert batched.shape == (2, 9, 12, 4 * 64)
    for t, ref in enumerate(streamed):
        torch.testing.assert_close(batched[0, t], ref, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(batched[1, t], ref, atol=2e-5, rtol=1e-4)
    # gradients reach the aggregator (the cache path cannot give them)
    model.set_trainable(vggt=True)
    try:
        causal_vggt_features(model, images[None, :5])[0, -1].sum().backward()
        grad = model.vggt.aggregator.global_blocks[0].attn.qkv.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    finally:
        model.set_trainable()
        model.zero_grad(set_to_none=True)


def test_vggt_step_batch_equals_single_episodes(setup):
    _, model, _, _, _, resized = setup
    images = frames_to_images(torch.from_numpy(np.stack(resized[:4])))
    cache_b = model.new_spatial_cache(batch_size=2)
    cache_1 = model.new_spatial_cache()
    for img in images:
        both = vggt_step_features(model, torch.stack([img, img]), cache_b)
        single = model.vggt_features(img, cache_1)
        torch.testing.assert_close(both[1], single, atol=2e-5, rtol=1e-4)


def test_regroup_batched_matches_processor(setup):
    from janus_core.processor import regroup_vggt_features

    _, model, _, _, _, _ = setup
    x = torch.randn(2, 3, 63, 5)
    out = regroup_batched(x, model.geometry)
    assert torch.equal(out[1, 2], regroup_vggt_features(x[1, 2], model.geometry))


@pytest.mark.parametrize("n", [1, 3, 4])
def test_prompt_bank_matches_processor_and_rope_index(setup, n):
    _, model, _, proc, _, _ = setup
    bank = PromptBank(model, proc)
    bank.check("Walk past the sofa, turn left and stop by the door.", n)
    bank.check("go", n)


def test_fast_logits_equal_the_policys_first_token(setup):
    """The whole step (VGGT stream, ViT, fusion, prompt, LLM) vs JanusVLNPolicy, at every t."""
    cfg, model, tok, proc, raw, resized = setup
    instruction = "Exit the kitchen and stop next to the blue sofa."
    policy = JanusVLNPolicy(model, proc)
    policy.reset(instruction)
    bank = PromptBank(model, proc)
    T = len(raw)
    images = frames_to_images(torch.from_numpy(np.stack(resized)))
    with torch.no_grad():
        vggt = merge_vggt(model, causal_vggt_features(model, images[None]))[0]  # [T, tok, H]
        pv, grid = qwen_patches(images, proc.geometry)
        vit = model.encode_images(pv, grid).view(T, -1, cfg.qwen.hidden_size)
        prompts, rows = [], []
        for t in range(T):
            idx = sample_history(t, cfg.memory.num_history)
            prompts.append(bank.get(instruction, len(idx)))
            rows.append(vit[idx] + model.lam * vggt[t][None])
        batch = build_llm_batch(prompts, [[]] * T, cfg.qwen.pad_token_id, model.device)
        hidden = llm_hidden(model, batch, torch.cat(rows).reshape(-1, cfg.qwen.hidden_size))
        last = batch.lengths - 1
        first = model.qwen.lm_head(hidden[torch.arange(T), last]).argmax(-1)
    for t in range(T):
        result = policy.act(Observation(rgb=raw[t], depth=None, pose=(0, 0, 0, 0), stamp=t))
        assert policy.last_token_ids[0] == int(first[t]), f"step {t}"
        assert result.step == t


@pytest.mark.parametrize("kv_cache", [True, False])
def test_lockstep_policy_equals_separate_policies(setup, kv_cache):
    """Two episodes in lockstep give the tokens two JanusVLNPolicy objects give."""
    from training.lockstep import LockstepPolicy

    _, _, tok, _, raw, _ = setup
    torch.manual_seed(1)
    cfg = _cfg(max_new_tokens=4)
    model = build_model(cfg, device="cpu", dtype="float32")
    proc = JanusProcessor(cfg, tok)
    instructions = ["Walk forward and stop by the bed.",
                    "Turn left, exit the bathroom and go past the blue sofa."]  # other length
    singles = [JanusVLNPolicy(model, proc) for _ in instructions]
    for p, text in zip(singles, instructions):
        p.reset(text)
    lock = LockstepPolicy(model, proc, kv_cache=kv_cache)
    lock.reset(instructions)
    for t in range(6):
        pair = [raw[t], raw[(t + 3) % len(raw)]]
        actions = lock.act([proc.preprocess_frame(f) for f in pair])
        for b, p in enumerate(singles):
            r = p.act(Observation(rgb=pair[b], depth=None, pose=(0, 0, 0, 0), stamp=t))
            assert lock.last_tokens[b] == p.last_token_ids, f"step {t} row {b}"
            assert actions[b] == r.action
