"""JanusVLNPolicy in reference mode: the release's loop step for step, on tiny models."""

import numpy as np
import pytest
import torch
from janus_test_utils import frames, small_cfg, tokenizer_for

from janus_core.actions import Action
from janus_core.checkpoint import save_checkpoint
from janus_core.factory import build_policy
from janus_core.interface import Observation, StepResult
from janus_core.model import build_model
from janus_core.policy import JanusVLNPolicy
from janus_core.processor import JanusProcessor, sample_history

STAGES = {"preprocess", "vggt", "vit", "llm", "action", "total"}


def _policy(seed=0, **changes):
    cfg = small_cfg(**changes)
    torch.manual_seed(seed)
    return JanusVLNPolicy(build_model(cfg, device="cpu"), JanusProcessor(cfg, tokenizer_for(cfg)))


def test_short_episode_at_the_true_640x480_geometry():
    policy = build_policy("tiny", device="cpu")
    assert policy.processor.geometry.tokens_per_image == 391
    policy.reset("Walk past the table and stop at the door.")
    for t, rgb in enumerate(frames(policy.cfg, 3)):
        result = policy.act(Observation(rgb=rgb))
        assert isinstance(result, StepResult) and isinstance(result.action, Action)
        assert result.step == t and set(result.timings) == STAGES
        assert all(v >= 0 for v in result.timings.values())
        assert result.parsed == (result.text.strip() in Action.__members__)
        assert 1 <= len(policy.last_token_ids) <= policy.cfg.max_new_tokens
    assert policy.spatial_cache.frames_seen == 3 and len(policy.frames) == 3
    assert policy.frames[0].shape == (490, 644, 3)


def test_reference_loop_feeds_vggt_every_frame_and_the_llm_sampled_frames():
    policy = _policy(memory=small_cfg().memory.__class__(
        spatial_initial=2, spatial_recent=4, num_history=3))
    model = policy.model
    vggt_calls, vit_calls = [], []
    encode_vggt, encode_images = model.encode_vggt, model.encode_images

    def spy_vggt(frame, cache):
        vggt_calls.append((frame.clone(), cache.frames_seen))
        return encode_vggt(frame, cache)

    def spy_images(pixel_values, grid):
        vit_calls.append(pixel_values.clone())
        return encode_images(pixel_values, grid)

    model.encode_vggt, model.encode_images = spy_vggt, spy_images
    cams = frames(policy.cfg, 10, seed=1)
    policy.reset("go to the kitchen")
    for t, rgb in enumerate(cams):
        policy.act(Observation(rgb=rgb))
        resized = [policy.processor.preprocess_frame(c) for c in cams[: t + 1]]
        # VGGT: this step's frame only, after exactly t earlier frames went into the cache
        frame, seen = vggt_calls[t]
        assert seen == t and torch.equal(frame, policy.processor.vggt_input(resized[t]))
        # ViT: the sampled frames, in order, current last
        idx = sample_history(t, 3)
        expected, _ = policy.processor.qwen_inputs([resized[i] for i in idx])
        assert torch.equal(vit_calls[t], expected)
    assert [len(sample_history(t, 3)) for t in (0, 3, 4, 9)] == [1, 4, 4, 4]
    cache = policy.spatial_cache
    assert cache.frames_seen == 10 and cache.frame_ids == [0, 1, 6, 7, 8, 9]  # first 2 + last 4


def _reply(policy, text):
    tok = policy.processor.tokenizer
    ids = tok(text)["input_ids"] + [tok.eos_token_id]
    policy.model.greedy_generate = lambda *args, **kwargs: list(ids)


def test_reply_parsing_and_forced_stop_at_max_steps():
    policy = _policy(max_steps=2)
    _reply(policy, "MOVE_FORWARD")
    policy.reset("go")
    cams = frames(policy.cfg, 4)
    results = [policy.act(Observation(rgb=rgb)) for rgb in cams]
    assert [r.action for r in results] == [Action.MOVE_FORWARD, Action.MOVE_FORWARD,
                                           Action.STOP, Action.STOP]
    assert all(r.text == "MOVE_FORWARD" and r.parsed for r in results)
    assert policy.spatial_cache.frames_seen == 4  # the model still runs, as in the release
    _reply(policy, "I would go forward")
    result = policy.act(Observation(rgb=cams[0]))
    assert result.action is Action.STOP and not result.parsed


def test_decoding_stops_at_max_new_tokens_without_eos():
    policy = _policy(max_new_tokens=3)
    policy.eos_token_ids = ()
    policy.reset("go")
    policy.act(Observation(rgb=frames(policy.cfg, 1)[0]))
    assert len(policy.last_token_ids) == 3
    assert _policy().eos_token_ids == (policy.cfg.qwen.eos_token_id,)


def test_reset_bad_frames_and_call_order():
    policy = _policy()
    with pytest.raises(RuntimeError, match="reset"):
        policy.act(Observation(rgb=frames(policy.cfg, 1)[0]))
    with pytest.raises(ValueError, match="instruction"):
        policy.reset("  ")
    policy.reset("go left")
    policy.act(Observation(rgb=frames(policy.cfg, 1)[0]))
    for bad in [np.zeros((98, 126, 3), np.float32), np.zeros((98, 126, 4), np.uint8),
                np.zeros((0, 126, 3), np.uint8)]:
        with pytest.raises(ValueError):
            policy.act(Observation(rgb=bad))
        assert policy.step == 1 and len(policy.frames) == 1  # state untouched
        assert policy.spatial_cache.frames_seen == 1
    policy.act(Observation(rgb=np.zeros((720, 1280, 3), np.uint8)))  # any camera size
    assert policy.step == 2 and policy.frames[-1].shape == policy.frames[0].shape
    policy.reset("go right")
    assert policy.step == 0 and policy.frames == [] and policy.spatial_cache.frames_seen == 0
    assert policy.act(Observation(rgb=frames(policy.cfg, 1)[0])).step == 0


def test_reference_policy_refuses_streaming_configs():
    with pytest.raises(ValueError, match="mode 'reference'"):
        _policy(mode="streaming")  # streaming is janus_core.streaming.StreamingPolicy


def test_ablation_without_vggt_acts():
    policy = _policy(use_vggt=False)
    assert policy.spatial_cache is None
    policy.reset("go")
    result = policy.act(Observation(rgb=frames(policy.cfg, 1)[0]))
    assert "vggt" not in result.timings and isinstance(result.action, Action)


def test_policy_from_a_checkpoint_folder_acts_like_the_in_memory_one(tmp_path):
    policy = _policy(seed=3)
    path = save_checkpoint(policy.model, policy.processor.tokenizer, policy.cfg, tmp_path / "c",
                           max_shard_size="300KB")
    loaded = build_policy(path, device="cpu")
    assert loaded.cfg == policy.cfg
    for p in (policy, loaded):
        p.eos_token_ids = ()  # decode the full 24 tokens: a stronger comparison
        p.reset("walk to the door")
    for rgb in frames(policy.cfg, 3, seed=5):
        a, b = policy.act(Observation(rgb=rgb)), loaded.act(Observation(rgb=rgb))
        assert a.text == b.text and policy.last_token_ids == loaded.last_token_ids
    from janus_core.streaming import StreamingPolicy

    assert type(loaded) is JanusVLNPolicy
    assert isinstance(build_policy(path, device="cpu", mode="streaming"), StreamingPolicy)


def test_benchmark_runs_on_cpu(tmp_path, monkeypatch):
    import benchmarks.common
    from benchmarks import act_step

    monkeypatch.setattr(benchmarks.common, "RESULTS", tmp_path)
    preset = tmp_path / "small.yaml"
    small_cfg().to_yaml(preset)
    results = act_step.main(["--preset", str(preset), "--device", "cpu", "--frames", "0", "2",
                             "--repeats", "1", "--decode-tokens", "2"])
    assert [r["cached"] for r in results] == [0, 2]
    assert [r["images"] for r in results] == [1, 3] and results[0]["new_tokens"] == 2
    assert results[1]["cache_frames"] == 3  # after the timed step
    text = (tmp_path / "act_step.md").read_text()
    assert "| cached frames |" in text and "vggt ms" in text and "Command:" in text
