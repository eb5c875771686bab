"""SemanticCache: bookkeeping, bounded storage, and eviction that keeps mRoPE positions valid.

Two eviction checks at the LLM level:

- one decoder layer: a kept token's K/V depend only on its embedding and position, so after
  eviction the streaming scores must equal a fresh full prefill of exactly the kept tokens
  (prefix, held frames, current frame, step text, candidate) with the kept position ids;
- several layers: kept K/V also carry what they attended to before the eviction, so the
  comparison is an independent naive streaming loop on transformers' own ``DynamicCache``
  (stock SDPA and masks, candidates one at a time, eviction by ``index_select`` along the
  sequence), which must give the same scores.
"""

import dataclasses

import pytest
import torch
from janus_test_utils import frames, small_cfg, tokenizer_for
from transformers import DynamicCache

from janus_core.compat import cache_arguments
from janus_core.config import MemoryConfig
from janus_core.interface import Observation
from janus_core.memory import SemanticCache
from janus_core.model import build_model
from janus_core.processor import JanusProcessor
from janus_core.streaming import StreamingPolicy, full_prefill_scores

INSTRUCTION = "walk past the table and stop at the door"


def make_cache(initial=2, recent=3, frame_tokens=5, image_tokens=3, layers=2):
    cfg = small_cfg()
    qwen = dataclasses.replace(cfg.qwen, num_hidden_layers=layers)
    mem = MemoryConfig(semantic_initial=initial, semantic_recent=recent)
    return SemanticCache(qwen, mem, frame_tokens, image_tokens, device="cpu", dtype=torch.float32)


def write(cache, n, seed):
    """Declare n new tokens and write distinct K/V for every layer; returns the keys written."""
    cache.begin(n)
    g = torch.Generator().manual_seed(seed)
    keys = []
    for layer in range(cache.num_layers):
        k = torch.randn(1, cache.num_kv_heads, n, cache.head_dim, generator=g)
        cache.update(k, -k, layer)
        keys.append(k)
    return keys


def step(cache, seed, scratch=2):
    keys = write(cache, cache.frame_tokens + scratch, seed)
    embeds = torch.full((cache.image_tokens, cache.hidden_size), float(seed))
    evicted = cache.commit_frame(embeds, cache.next_position + 7)
    return [k[:, :, : cache.frame_tokens] for k in keys], evicted


def test_windows_eviction_and_stored_values():
    cache = make_cache(initial=2, recent=3)
    cache.reset(prefix_len=4, scratch_len=2)
    write(cache, 4, seed=100)
    cache.end_prefix(4)
    written, evictions, nbytes = {}, [], None
    for t in range(12):
        before = cache.next_position
        written[t], evicted = step(cache, seed=t)
        evictions.append(evicted)
        assert cache.frame_positions(t) == (before, before + 7)
        if t == 5:
            nbytes = cache.nbytes
        if t >= 5:
            assert cache.nbytes == nbytes  # no growth once the windows are full
    assert evictions == [None] * 5 + [2, 3, 4, 5, 6, 7, 8]
    assert cache.frame_ids == [0, 1, 9, 10, 11]
    assert cache.num_frames == 5 and cache.frames_seen == 12
    assert cache.next_position == 4 + 12 * 7
    # every held frame's K/V and embeddings are the ones written at its step, wherever they sit
    for f in cache.frame_ids:
        start, end = cache.frame_span(f)
        for layer in range(cache.num_layers):
            k, v = cache.layer_kv(layer)
            torch.testing.assert_close(k[:, :, start:end], written[f][layer], rtol=0, atol=0)
            torch.testing.assert_close(v[:, :, start:end], -written[f][layer], rtol=0, atol=0)
        assert torch.all(cache.frame_embeds(f) == float(f))
    # time order: prefix first, then frames by episode index
    index = cache.token_index()
    assert index[:4].tolist() == [0, 1, 2, 3]
    assert index[4:9].tolist() == list(range(*cache.frame_span(0)))
    assert len(index) == cache.held_tokens == 4 + 5 * 5


def test_no_sliding_window_keeps_only_initial_frames():
    cache = make_cache(initial=2, recent=0)
    cache.reset(prefix_len=1, scratch_len=2)
    write(cache, 1, seed=0)
    cache.end_prefix(1)
    evicted = [step(cache, seed=t)[1] for t in range(5)]
    assert evicted == [None, None, 2, 3, 4]  # beyond the initial window a frame lives one step
    assert cache.frame_ids == [0, 1]


def test_protocol_errors_leave_state_unchanged():
    cache = make_cache()
    cache.reset(prefix_len=3, scratch_len=2)
    with pytest.raises(ValueError, match="prefix"):
        cache.begin(5)
    with pytest.raises(RuntimeError, match="begin"):
        cache.update(torch.zeros(1, cache.num_kv_heads, 3, cache.head_dim),
                     torch.zeros(1, cache.num_kv_heads, 3, cache.head_dim), 0)
    cache.begin(3)
    cache.update(torch.zeros(1, cache.num_kv_heads, 3, cache.head_dim),
                 torch.zeros(1, cache.num_kv_heads, 3, cache.head_dim), 0)
    with pytest.raises(RuntimeError, match="missing"):
        cache.end_prefix(3)
    write(cache, 3, seed=1)
    cache.end_prefix(3)
    with pytest.raises(ValueError, match="at most"):
        cache.begin(cache.frame_tokens + 3)
    keys = write(cache, cache.frame_tokens, seed=2)
    with pytest.raises(ValueError, match="embeds"):
        cache.commit_frame(torch.zeros(1, 1), cache.next_position + 1)
    assert cache.num_frames == 0
    cache.commit_frame(torch.zeros(cache.image_tokens, cache.hidden_size), 10)
    assert cache.frame_ids == [0] and keys


def test_size_bytes_matches_allocation_and_full_size_figure():
    cache = make_cache(initial=2, recent=3)
    cache.reset(prefix_len=4, scratch_len=2)
    write(cache, 4, seed=0)
    cache.end_prefix(4)
    step(cache, seed=1)
    cfg = small_cfg()
    qwen = dataclasses.replace(cfg.qwen, num_hidden_layers=2)
    expected = SemanticCache.size_bytes(
        qwen, MemoryConfig(semantic_initial=2, semantic_recent=3), 5, 3, 4, 2, torch.float32
    )
    assert cache.nbytes == expected
    full = small_cfg().__class__()  # full-size defaults
    kv_tokens = SemanticCache.capacity_for(full.memory, 393, 60, 256)
    per_token = SemanticCache.size_bytes(full.qwen, full.memory, 393, 391, 1, 0, torch.bfloat16)
    assert kv_tokens == 60 + 57 * 393 + 256
    assert per_token > 0
    kv_bytes = 28 * 2 * 4 * 128 * 2 * kv_tokens
    assert SemanticCache.size_bytes(
        full.qwen, full.memory, 393, 391, 60, 256, torch.bfloat16
    ) == kv_bytes + 56 * 391 * 3584 * 2


# ---- eviction keeps positions valid, at the LLM level --------------------------------------------
def sharpen(model, factor=10.0):
    """Scale the LLM's matrices so attention is far from uniform (random init is too flat)."""
    with torch.no_grad():
        for p in model.qwen.model.language_model.parameters():
            if p.ndim == 2:
                p.mul_(factor)


def streaming_policy(layers, initial, recent, seed=0):
    cfg = small_cfg(mode="streaming")
    cfg = cfg.replace(
        qwen=dataclasses.replace(cfg.qwen, num_hidden_layers=layers),
        memory=dataclasses.replace(cfg.memory, semantic_initial=initial, semantic_recent=recent),
    )
    torch.manual_seed(seed)
    model = build_model(cfg, device="cpu", dtype="float32")
    sharpen(model)
    return StreamingPolicy(model, JanusProcessor(cfg, tokenizer_for(cfg)))


def test_eviction_one_layer_equals_fresh_prefill_of_kept_tokens():
    policy = streaming_policy(layers=1, initial=1, recent=2)
    policy.reset(INSTRUCTION)
    layout, cache = policy.layout, policy.semantic_cache
    kept = {}  # frame id -> (embeds, absolute positions [3, L]) recorded after its own step
    for t, rgb in enumerate(frames(policy.cfg, 7, seed=3)):
        visible = cache.frame_ids + [t]
        policy.act(Observation(rgb=rgb))
        start, _ = cache.frame_positions(t)
        kept[t] = (cache.frame_embeds(t).clone(), layout.frame_positions + start)
        ctx = torch.cat([layout.prefix_positions] + [kept[f][1] for f in visible], dim=1)
        expected = full_prefill_scores(policy.model, layout, [kept[f][0] for f in visible], ctx)
        torch.testing.assert_close(policy.last_scores, expected, rtol=0, atol=1e-4)
    assert cache.frame_ids == [0, 5, 6]
    # the positions of kept frames are those they were written with: a gap where 1..4 were
    starts = [cache.frame_positions(f)[0] for f in cache.frame_ids]
    span = layout.frame_span
    assert starts == [len(layout.prefix_ids) + f * span for f in (0, 5, 6)]


def naive_streaming_scores(policy, rgbs, initial, recent):
    """Independent reference: transformers' DynamicCache, stock attention, index_select eviction.

    Uses the same per-frame fused embeddings as the policy (the encoders are tested elsewhere),
    explicit positions that only grow, and scores each candidate with its own forward.
    """
    model, layout = policy.model, policy.layout
    lm, embed = model.qwen.model.language_model, model.qwen.get_input_embeddings()
    cache = DynamicCache()
    prefix = embed(torch.tensor(layout.prefix_ids))[None]
    lm(inputs_embeds=prefix, position_ids=layout.prefix_positions[:, None], use_cache=True,
       **cache_arguments(cache))
    next_pos = int(layout.prefix_positions.max()) + 1
    spans = []  # (frame id, start, end) in cache order
    all_scores = []
    for t, fused in enumerate(rgbs):
        ids = torch.tensor([layout.frame_ids])
        x = model.embed(ids, fused)
        n_before = cache.get_seq_length()
        lm(inputs_embeds=x, position_ids=(layout.frame_positions + next_pos)[:, None],
           use_cache=True, **cache_arguments(cache))
        spans.append((t, n_before, cache.get_seq_length()))
        next_pos += layout.frame_span
        held = cache.get_seq_length()
        scores = []
        for cand in layout.candidates:
            toks = layout.suffix_ids + cand[:-1]
            pos = torch.arange(len(toks)) + next_pos
            out = lm(inputs_embeds=embed(torch.tensor([toks])), position_ids=pos.expand(3, 1, -1),
                     use_cache=True, **cache_arguments(cache))
            h = out.last_hidden_state[0, len(layout.suffix_ids) - 1 :]
            logp = model.qwen.lm_head(h).float().log_softmax(-1)
            scores.append(logp[torch.arange(len(cand)), torch.tensor(cand)].sum())
            cache.crop(held - cache.get_seq_length())  # negative: drop that many (4.x and 5.x)
        all_scores.append(torch.stack(scores))
        recent_ids = [f for f, _, _ in spans if f >= initial]
        if len(recent_ids) > recent:  # evict the oldest non-initial frame by index_select
            victim = min(recent_ids)
            keep = [i for f, a, b in spans if f != victim for i in range(a, b)]
            keep = list(range(spans[0][1])) + keep
            index = torch.tensor(keep)
            for layer in cache.layers:
                layer.keys = layer.keys.index_select(2, index)
                layer.values = layer.values.index_select(2, index)
            offset, new_spans = spans[0][1], []
            for f, a, b in spans:
                if f != victim:
                    new_spans.append((f, offset, offset + b - a))
                    offset += b - a
            spans = new_spans
    return all_scores


def test_eviction_multi_layer_equals_naive_dynamic_cache_loop():
    initial, recent = 1, 2
    policy = streaming_policy(layers=2, initial=initial, recent=recent, seed=1)
    policy.reset(INSTRUCTION)
    fused, got = [], []
    for t, rgb in enumerate(frames(policy.cfg, 6, seed=4)):
        policy.act(Observation(rgb=rgb))
        fused.append(policy.semantic_cache.frame_embeds(t).clone())
        got.append(policy.last_scores.clone())
    with torch.no_grad():
        expected = naive_streaming_scores(policy, fused, initial, recent)
    for t, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=f"step {t}")
    assert policy.semantic_cache.frame_ids == [0, 4, 5]
