"""Streaming mode: one ViT pass per frame, bounded memory, equivalence with a full prefill.

What "reference-equivalent" means here (docs/streaming.md): with windows large enough that
nothing is evicted, the streaming scores of the four actions must equal the sums of token
log-probabilities from a plain full prefill (stock transformers forward, its own causal mask,
positions from transformers' ``get_rope_index``) over the same token sequence: the release's
evaluation prompt with every frame of the episode as an image, each frame's visual tokens fused
with its own VGGT block, followed by the candidate reply. At the first step that sequence is
exactly the release's prompt, so there the check runs through ``JanusVLNModel.forward``.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from janus_test_utils import SMALL_IMAGE, frames, small_cfg, tokenizer_for

from benchmarks import common, step_latency
from janus_core.actions import Action
from janus_core.config import ConfigError, ImageConfig, load_config
from janus_core.factory import build_policy
from janus_core.interface import Observation
from janus_core.llm_attention import grouped_sdpa_attention, repeat_sdpa_attention
from janus_core.model import build_model
from janus_core.policy import JanusVLNPolicy
from janus_core.processor import JanusProcessor
from janus_core.quantize import QuantizationError, quantize_model
from janus_core.streaming import StreamingPolicy, full_prefill_scores
from janus_core.vggt_step import lean_vggt_embeds, new_lean_spatial_cache

INSTRUCTION = "go down the hallway and stop at the kitchen door"


def make_policy(seed=0, sharpen=True, **memory):
    cfg = small_cfg(mode="streaming")
    if memory:
        cfg = cfg.replace(memory=dataclasses.replace(cfg.memory, **memory))
    torch.manual_seed(seed)
    model = build_model(cfg, device="cpu", dtype="float32")
    if sharpen:  # random init is so flat that attention barely matters; make it matter
        with torch.no_grad():
            for p in model.qwen.model.language_model.parameters():
                if p.ndim == 2:
                    p.mul_(10.0)
    return StreamingPolicy(model, JanusProcessor(cfg, tokenizer_for(cfg)))


def test_layout_is_the_release_prompt_with_every_frame():
    policy = make_policy(sharpen=False)
    policy.reset(INSTRUCTION)
    layout, model, proc = policy.layout, policy.model, policy.processor
    tok = proc.tokenizer
    for k, action in enumerate(Action):
        assert layout.candidates[k] == tok(action.name)["input_ids"] + [tok.eos_token_id]
    for n in (1, 2, 3):
        prompt = proc.prompt_ids(INSTRUCTION, n)[0].tolist()
        cand = layout.candidates[1]
        assert layout.full_ids(n, 1) == prompt + cand
        # positions: the streaming pieces laid end to end are transformers' get_rope_index
        grids = torch.tensor([layout.grid_thw] * n)
        expected, _ = model.rope_positions(torch.tensor([prompt]), grids)
        prefix_len, span = len(layout.prefix_ids), layout.frame_span
        pieces = [layout.prefix_positions]
        pieces += [layout.frame_positions + prefix_len + i * span for i in range(n)]
        suffix = layout.step_positions[:, len(layout.frame_ids) :][:, : len(layout.suffix_ids)]
        pieces.append(suffix + prefix_len + (n - 1) * span)
        assert torch.equal(torch.cat(pieces, 1), expected[:, 0])


def test_streaming_equals_full_prefill_without_eviction():
    policy = make_policy(seed=1, semantic_initial=8, semantic_recent=48)
    policy.reset(INSTRUCTION)
    embeds = []
    for t, rgb in enumerate(frames(policy.cfg, 6, seed=2)):
        result = policy.act(Observation(rgb=rgb))
        embeds.append(policy.semantic_cache.frame_embeds(t).clone())
        expected = full_prefill_scores(policy.model, policy.layout, embeds)
        torch.testing.assert_close(policy.last_scores, expected, rtol=0, atol=1e-4)
        assert result.action == Action(int(expected.argmax()))
    assert policy.semantic_cache.frame_ids == list(range(6))
    assert policy.last_evicted is None


def test_first_step_equals_release_forward():
    """Step 0: the streaming sequence is the release prompt; score it with the model's forward."""
    policy = make_policy(seed=2)
    policy.reset(INSTRUCTION)
    model, proc = policy.model, policy.processor
    rgb = frames(policy.cfg, 1, seed=5)[0]
    policy.act(Observation(rgb=rgb))
    frame = proc.preprocess_frame(rgb)
    pixel_values, grid = proc.qwen_inputs([frame])
    vggt = model.encode_vggt(proc.vggt_input(frame))  # fresh spatial cache = episode frame 0
    prompt = proc.prompt_ids(INSTRUCTION, 1)[0].tolist()
    expected = []
    for cand in policy.layout.candidates:
        ids = torch.tensor([prompt + cand])
        with torch.no_grad():
            logits = model(ids, pixel_values, grid, vggt_embeds=[vggt]).logits[0]
        logp = logits.float().log_softmax(-1)
        rows = torch.arange(len(prompt) - 1, len(prompt) + len(cand) - 1)
        expected.append(logp[rows, torch.tensor(cand)].sum())
    torch.testing.assert_close(policy.last_scores, torch.stack(expected), rtol=0, atol=1e-4)


@pytest.mark.parametrize("changes", [{"use_vggt": False}, {"lam": 0.0}])
def test_streaming_and_reference_policies_give_the_same_action_logits(changes):
    """The two policies side by side on one model and one seeded episode, nothing evicted.

    The only by-design difference left while reference shows every frame (t <= 8) is the VGGT
    fusion (reference tiles the current frame's block onto every image), so it is switched off
    (no VGGT branch, or lam = 0). Reference's own prefill inputs (its re-encoded ViT features,
    fusion and prompt) are captured and each candidate is scored on top of them.
    """
    cfg = small_cfg(memory=dataclasses.replace(small_cfg().memory, semantic_initial=8,
                                               semantic_recent=48), **changes)
    torch.manual_seed(4)
    model = build_model(cfg, device="cpu", dtype="float32")
    with torch.no_grad():
        for p in model.qwen.model.language_model.parameters():
            if p.ndim == 2:
                p.mul_(10.0)
    proc = JanusProcessor(cfg, tokenizer_for(cfg))
    reference, streaming = JanusVLNPolicy(model, proc), StreamingPolicy(model, proc)
    captured = []
    greedy = model.greedy_generate
    model.greedy_generate = lambda *args: captured.append(args[:3]) or greedy(*args)
    reference.reset(INSTRUCTION)
    streaming.reset(INSTRUCTION)
    embed = model.qwen.get_input_embeddings()
    for rgb in frames(cfg, 9, seed=3):
        reference.act(Observation(rgb=rgb))
        result = streaming.act(Observation(rgb=rgb))
        input_ids, inputs_embeds, grid = captured[-1]
        scores = []
        for cand in streaming.layout.candidates:
            ids = torch.cat([input_ids, torch.tensor([cand])], 1)
            with torch.no_grad():
                embeds = torch.cat([inputs_embeds, embed(torch.tensor([cand]))], 1)
                pos, _ = model.rope_positions(ids, grid)
                logp = model.qwen(inputs_embeds=embeds, position_ids=pos).logits[0].log_softmax(-1)
            rows = torch.arange(input_ids.shape[1] - 1, ids.shape[1] - 1)
            scores.append(logp[rows, torch.tensor(cand)].sum())
        torch.testing.assert_close(streaming.last_scores, torch.stack(scores), rtol=0, atol=1e-4)
        assert result.action == Action(int(torch.stack(scores).argmax()))
    assert streaming.last_evicted is None and grid.shape[0] == 9  # reference showed all 9 frames


def test_each_frame_goes_through_the_encoders_once():
    policy = make_policy(sharpen=False)
    visual = policy.model.qwen.model.visual
    calls = []
    original = visual.forward

    def counting(hidden_states, grid_thw=None, **kwargs):
        calls.append(grid_thw.shape[0])
        return original(hidden_states, grid_thw=grid_thw, **kwargs)

    visual.forward = counting
    embed_calls = []
    agg = policy.model.vggt.aggregator
    embed_frames = agg.embed_frames

    def counting_embed(images, first_is_reference):
        embed_calls.append(images.shape[1])
        return embed_frames(images, first_is_reference)

    agg.embed_frames = counting_embed
    policy.reset(INSTRUCTION)
    for rgb in frames(policy.cfg, 7, seed=1):
        policy.act(Observation(rgb=rgb))
    assert calls == [1] * 7  # one ViT call per step, one image in it
    assert embed_calls == [1] * 7  # one VGGT frame per step
    assert policy.spatial_cache.frames_seen == 7


@pytest.mark.parametrize("static", [False, True])
def test_memory_stays_bounded_over_500_steps(static):
    image = ImageConfig(input_width=28, input_height=28, target_width=28)  # 1 visual token
    cfg = load_config("tiny").replace(image=image, mode="streaming")
    cfg = cfg.replace(memory=dataclasses.replace(cfg.memory, semantic_initial=2,
                                                 semantic_recent=3, spatial_initial=2,
                                                 spatial_recent=3),
                      streaming=dataclasses.replace(cfg.streaming, static_shapes=static))
    torch.manual_seed(0)
    policy = StreamingPolicy(build_model(cfg, device="cpu", dtype="float32"),
                             JanusProcessor(cfg, tokenizer_for(cfg)))
    policy.reset(INSTRUCTION)
    sem, spa = policy.semantic_cache, policy.spatial_cache
    rng = np.random.default_rng(0)
    sizes = []
    for t in range(500):
        policy.act(Observation(rgb=rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)))
        assert sem.num_frames <= 5 and spa.num_frames <= 5
        if t >= 5:
            sizes.append((sem.nbytes, spa.nbytes, sem._kv.data_ptr()))
    assert len(set(sizes)) == 1  # no growth and no reallocation once the windows are full
    assert sem.frame_ids == [0, 1, 497, 498, 499]
    assert spa.frame_ids == [0, 1, 497, 498, 499]
    layout = policy.layout
    assert sem.next_position == len(layout.prefix_ids) + 500 * layout.frame_span
    assert sem.held_tokens == len(layout.prefix_ids) + 5 * len(layout.frame_ids)


def _sharpened(cfg, seed):
    torch.manual_seed(seed)
    model = build_model(cfg, device="cpu", dtype="float32")
    with torch.no_grad():
        for p in model.qwen.model.language_model.parameters():
            if p.ndim == 2:
                p.mul_(10.0)
    return model


@pytest.mark.parametrize("preset_geometry", [False, True])
def test_static_shapes_give_todays_streaming_scores_over_episodes(preset_geometry):
    """Fixed-shape caches and stages (the CUDA-graph code path, eager here) vs today's path.

    Two episodes on one policy pair (windows 2 + 4: evictions from step 7 on; the second
    instruction is longer, so the static step pads it into another bucket): the same scores,
    actions, held frames and evictions at every step. ``preset_geometry``: the tiny preset at
    the real 640x480 geometry (391 visual tokens a frame), else the small test geometry.
    """
    cfg = (load_config("tiny") if preset_geometry else small_cfg()).replace(mode="streaming")
    model = _sharpened(cfg, seed=5)
    proc = JanusProcessor(cfg, tokenizer_for(cfg))
    today = StreamingPolicy(model, proc)
    assert today.options.cuda_graphs  # the default, but a CPU runs the plain eager step
    assert type(today.semantic_cache).__name__ == "SemanticCache"
    static = StreamingPolicy(model, proc, dataclasses.replace(cfg.streaming, static_shapes=True))
    assert type(static.semantic_cache).__name__ == "StaticSemanticCache"
    episodes = [(INSTRUCTION, 8 if preset_geometry else 12),
                (INSTRUCTION + " then turn around and walk back to the stairs " * 3, 8)]
    buckets = []
    for e, (instruction, steps) in enumerate(episodes):
        today.reset(instruction)
        static.reset(instruction)
        buckets.append(static.semantic_cache.step_tokens - len(static.layout.frame_ids))
        assert static.layout.scratch_len <= buckets[-1]
        for rgb in frames(cfg, steps, seed=10 + e):
            a, b = today.act(Observation(rgb=rgb)), static.act(Observation(rgb=rgb))
            torch.testing.assert_close(static.last_scores, today.last_scores, rtol=0,
                                       atol=1e-4)
            assert a.action == b.action and a.probs == pytest.approx(b.probs, abs=1e-5)
            assert static.last_evicted == today.last_evicted
            assert static.semantic_cache.frame_ids == today.semantic_cache.frame_ids
            assert static.spatial_cache.frame_ids == today.spatial_cache.frame_ids
        assert today.last_evicted is not None  # the windows did slide
    grew = buckets[1] > buckets[0]  # the longer step text needs a larger scratch: reallocated
    assert static.semantic_cache.generation == 1 + grew
    assert static.graph_status() == {"vggt": "eager", "vit": "eager", "llm": "eager"}


def test_static_shapes_need_lean_vggt():
    with pytest.raises(ConfigError, match="lean_vggt"):
        small_cfg().replace(streaming=dataclasses.replace(
            small_cfg().streaming, static_shapes=True, lean_vggt=False))
    cfg = small_cfg(mode="streaming")
    model = build_model(cfg, device="cpu")
    options = dataclasses.replace(cfg.streaming, lean_vggt=False)
    options.static_shapes = True  # past the config check: the policy refuses too
    with pytest.raises(ValueError, match="lean_vggt"):
        StreamingPolicy(model, JanusProcessor(cfg, tokenizer_for(cfg)), options)


def test_lean_vggt_equals_full_aggregator_with_eviction():
    cfg = small_cfg()
    torch.manual_seed(3)
    model = build_model(cfg, device="cpu", dtype="float32")
    proc = JanusProcessor(cfg, tokenizer_for(cfg))
    full, lean = model.new_spatial_cache(), new_lean_spatial_cache(model)
    assert lean.num_layers == cfg.vggt.depth - 1 and lean.nbytes == 0
    for rgb in frames(cfg, 9, seed=7):  # 2 + 4 windows: evictions from frame 6 on
        image = proc.vggt_input(proc.preprocess_frame(rgb))
        expected = model.encode_vggt(image, full)
        got = lean_vggt_embeds(model, image, lean)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert lean.frame_ids == full.frame_ids == [0, 1, 5, 6, 7, 8]


def test_grouped_attention_equals_repeated_and_plain_sdpa():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 6, 5, 8), torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)
    allowed = torch.rand(5, 9) > 0.3
    allowed[:, 0] = True
    mask = torch.zeros(5, 9).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
    plain = F.scaled_dot_product_attention(
        q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), attn_mask=mask
    ).transpose(1, 2)
    grouped, _ = grouped_sdpa_attention(None, q, k, v, mask)
    repeated, _ = repeat_sdpa_attention(None, q, k, v, mask)
    torch.testing.assert_close(grouped, plain)
    torch.testing.assert_close(repeated, plain)


def test_build_policy_picks_streaming_and_reports_a_distribution(tmp_path):
    path = tmp_path / "cfg.yaml"
    small_cfg(mode="streaming", max_steps=2).to_yaml(path)
    policy = build_policy(path, device="cpu")
    assert isinstance(policy, StreamingPolicy)
    policy.reset(INSTRUCTION)
    for t, rgb in enumerate(frames(policy.cfg, 3)):
        result = policy.act(Observation(rgb=rgb))
        assert set(result.probs) == {a.name for a in Action}
        assert sum(result.probs.values()) == pytest.approx(1.0, abs=1e-5)
        best = max(result.probs, key=result.probs.get)
        assert result.text == best and result.parsed and result.step == t
        assert result.action == (Action.STOP if t >= 2 else Action[best])
        assert {"preprocess", "vggt", "vit", "llm", "action", "total"} <= set(result.timings)
    with pytest.raises(ValueError, match="instruction"):
        policy.reset("  ")
    with pytest.raises(ValueError, match="WxH"):
        policy.act(Observation(rgb=np.zeros((0, 5, 3), np.uint8)))  # empty (any size is fine)
    assert policy.step == 3  # the bad frame changed nothing


def test_mode_and_prompt_errors():
    with pytest.raises(ConfigError, match="prompt_style 'eval'"):
        small_cfg(mode="streaming", prompt_style="train")
    with pytest.raises(ConfigError, match="llm_attention"):
        small_cfg().replace(streaming=dataclasses.replace(small_cfg().streaming,
                                                          llm_attention="flash"))
    cfg = small_cfg(mode="streaming")
    model = build_model(cfg, device="cpu")
    with pytest.raises(ValueError, match="StreamingPolicy"):
        JanusVLNPolicy(model, JanusProcessor(cfg, tokenizer_for(cfg)))


def test_quantization_needs_cuda():
    cfg = small_cfg()
    model = build_model(cfg, device="cpu")
    assert quantize_model(model, "none") == 0
    with pytest.raises(QuantizationError, match="CUDA"):
        quantize_model(model, "int8")
    with pytest.raises(QuantizationError, match="quantize must be"):
        quantize_model(model, "int3")
    options = dataclasses.replace(cfg.streaming, quantize="nf4")
    with pytest.raises(QuantizationError, match="CUDA"):
        StreamingPolicy(model, JanusProcessor(cfg, tokenizer_for(cfg)), options)


def test_step_latency_benchmark_runs_on_cpu(tmp_path, monkeypatch):
    """Every variant, the profile, the agreement and the files, at the test geometry."""
    path = tmp_path / "small.yaml"
    small_cfg().to_yaml(path)
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    out = tmp_path / "out"
    study = step_latency.main([
        "--preset", str(path), "--device", "cpu", "--steps", "9", "--warmup", "1",
        "--profile-steps", "1", "--out-dir", str(out),
    ])
    variants = study["variants"]
    assert list(variants) == ["reference", "streaming", "static", "graphs"]
    for data in variants.values():
        assert data["summary"]["steps"] == 3  # full windows (2 + 4) from step 7
        assert data["summary"]["total"]["p50"] > 0
        assert {"preprocess", "vggt", "vit", "llm", "action"} <= set(data["profile"])
    assert variants["graphs"]["graph_status"] == {"vggt": "eager", "vit": "eager",
                                                  "llm": "eager"}  # no CUDA here
    agree = study["agreement"]["graphs vs streaming"]
    assert agree["argmax_agree"] == agree["steps"] == 9
    assert agree["max_abs_score_diff"] < 1e-4
    saved = json.loads((out / "step_latency.json").read_text())
    assert len(saved["records"]) == 4 * 9
    assert len((out / "steps.csv").read_text().strip().splitlines()) == 1 + 4 * 9
    text = (out / "step_latency.md").read_text()
    for part in ("### Full windows", "### Where the time goes", "### Agreement",
                 "### Targets", "Command:"):
        assert part in text
    assert "### Full windows" in (tmp_path / "results" / "step_latency.md").read_text()


def test_step_latency_budget_skips_what_does_not_fit(tmp_path):
    path = tmp_path / "small.yaml"
    small_cfg().to_yaml(path)
    study = step_latency.main([
        "--preset", str(path), "--device", "cpu", "--steps", "2", "--warmup", "0",
        "--variants", "streaming", "graphs", "--budget-s", "1e-9", "--no-write",
    ])
    assert study["variants"] == {"streaming": {"skipped": "time budget"},
                                 "graphs": {"skipped": "time budget"}}


@pytest.mark.slow
def test_step_latency_benchmark_tiny_preset_cpu(tmp_path):
    """The CPU command from the docs (the tiny preset at 640x480, about a minute on 2 cores)."""
    study = step_latency.main(["--preset", "tiny", "--device", "cpu", "--steps", "12",
                               "--profile-steps", "1", "--no-write", "--out-dir",
                               str(tmp_path)])
    assert all("summary" in v for v in study["variants"].values())


def test_small_geometry_is_what_the_tests_assume():
    assert SMALL_IMAGE.input_width == 126  # 12 visual tokens per frame at the test geometry
