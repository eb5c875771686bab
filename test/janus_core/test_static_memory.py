"""Fixed-shape caches: same frames, same eviction order and same outputs as the dynamic ones.

The spatial cache is checked against the release-style cache of test_spatial_memory (K stored
before norm and RoPE, concatenated and trimmed every step) and against today's SpatialCache slot
by slot; the semantic cache against SemanticCache through the same protocol.
"""

import pytest
import torch
from test_spatial_memory import (
    TINY,
    TINY_MEMORY,
    ReleaseSpatialCache,
    randomize_,
    reference_forward,
    video,
)

from janus_core.config import MemoryConfig, load_config
from janus_core.memory import SemanticCache, SpatialCache
from janus_core.static_memory import StaticSemanticCache, StaticSpatialCache
from janus_core.vggt import VGGT

QWEN = load_config("tiny").qwen


@pytest.fixture(scope="module")
def agg():
    return randomize_(VGGT(TINY)).aggregator


def static_cache(agg, memory=TINY_MEMORY, h=28, w=42):
    return StaticSpatialCache(TINY, memory, agg.tokens_per_frame(h, w), "cpu", torch.float32)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---- spatial ------------------------------------------------------------------------------------
def test_static_spatial_matches_release_cache_through_eviction(agg):
    images = video(12, seed=2)
    cache = static_cache(agg)
    rcache = ReleaseSpatialCache(TINY.depth, TINY_MEMORY.spatial_initial,
                                 TINY_MEMORY.spatial_recent)
    for t in range(12):
        assert cache.needs_mask == (t < cache.num_slots - 1)  # masked until every slot is used
        ours, _ = agg(images[:, t : t + 1], cache=cache)
        ref = reference_forward(agg, images[:, t : t + 1], rcache)
        for d in range(TINY.depth):
            close(ours[d], ref[d])
        assert cache.frame_ids == rcache.frame_ids
    assert cache.frame_ids == [0, 1, 8, 9, 10, 11]


@pytest.mark.parametrize("initial, recent", [(2, 4), (0, 3), (2, 0), (1, 1)])
def test_eviction_order_and_wrap_around_equal_spatial_cache(agg, initial, recent):
    """Slot by slot the same as today's SpatialCache for 40 steps (the ring wraps many times)."""
    memory = MemoryConfig(spatial_initial=initial, spatial_recent=recent)
    images = video(40, h=28, w=28, seed=4)
    ours = static_cache(agg, memory, h=28, w=28)
    theirs = SpatialCache(TINY, memory, agg.tokens_per_frame(28, 28))
    T = ours.tokens_per_frame
    for t in range(40):
        slot = ours._next_slot
        assert torch.equal(ours.write_index, torch.arange(slot * T, (slot + 1) * T))
        a, _ = agg(images[:, t : t + 1], cache=ours)
        b, _ = agg(images[:, t : t + 1], cache=theirs)
        close(a[-1], b[-1])
        assert ours._slot_frame == theirs._slot_frame and ours._next_slot == theirs._next_slot
        mask = ours.attention_mask()
        if mask is not None:  # free slots hidden, held ones and the next write visible
            for s, f in enumerate(ours._slot_frame):
                visible = f != -1 or s == ours._next_slot
                assert bool((mask[0, 0, 0, s * T : (s + 1) * T] == 0).all()) == visible
    assert ours.frame_ids == list(range(initial)) + list(range(40 - recent, 40))
    assert not ours.needs_mask


def test_first_frame_flag_and_frame_zero_never_touched(agg):
    images = video(30, h=28, w=28, seed=5)
    cache = static_cache(agg, h=28, w=28)
    assert bool(cache.first_flag)
    agg(images[:, :1], cache=cache)
    assert not bool(cache.first_flag)
    first = [tuple(t.clone() for t in cache.frame_kv(i, 0)) for i in range(TINY.depth)]
    ptr = cache._kv.data_ptr()
    for t in range(1, 30):
        agg(images[:, t : t + 1], cache=cache)
    for layer in range(TINY.depth):
        k, v = cache.frame_kv(layer, 0)
        assert torch.equal(k, first[layer][0]) and torch.equal(v, first[layer][1])
    assert cache._kv.data_ptr() == ptr
    assert cache.nbytes == SpatialCache.size_bytes(TINY, TINY_MEMORY, cache.tokens_per_frame,
                                                   torch.float32)


def test_reset_between_episodes_masks_the_old_episode(agg):
    """A second episode on a used buffer equals the same episode on a fresh cache."""
    used, fresh = static_cache(agg), static_cache(agg)
    first, second = video(9, seed=6), video(9, seed=7)
    for t in range(9):
        agg(first[:, t : t + 1], cache=used)
    used.reset()
    assert (used.frames_seen, used.frame_ids, bool(used.first_flag)) == (0, [], True)
    assert used.needs_mask and used._next_slot == 0
    for t in range(9):
        a, _ = agg(second[:, t : t + 1], cache=used)
        b, _ = agg(second[:, t : t + 1], cache=fresh)
        torch.testing.assert_close(a[-1], b[-1], rtol=0, atol=1e-6)
    assert used.frame_ids == fresh.frame_ids


def test_a_failed_step_commits_nothing(agg):
    cache = static_cache(agg)
    images = video(2, seed=8)
    agg(images[:, :1], cache=cache)
    k = torch.zeros(1, TINY.num_heads, cache.tokens_per_frame, TINY.embed_dim // TINY.num_heads)
    cache.append(0, k, k)
    with pytest.raises(RuntimeError, match="missing"):
        cache.commit()
    assert cache.frame_ids == [0] and cache._next_slot == 1
    cache.mark_written()  # what a replayed CUDA graph stands for
    cache.commit()
    assert cache.frame_ids == [0, 1]


def test_static_spatial_needs_device_and_dtype():
    with pytest.raises(ValueError, match="device and a dtype"):
        StaticSpatialCache(TINY, TINY_MEMORY, 11, None, torch.float32)


# ---- semantic -----------------------------------------------------------------------------------
def semantic_pair(initial=2, recent=3, frame_tokens=5, prefix=4, scratch=3):
    memory = MemoryConfig(semantic_initial=initial, semantic_recent=recent)
    dyn = SemanticCache(QWEN, memory, frame_tokens, frame_tokens - 2)
    sta = StaticSemanticCache(QWEN, memory, frame_tokens, frame_tokens - 2, "cpu",
                              torch.float32)
    dyn.reset(prefix, scratch)
    sta.reset(prefix, scratch)
    return dyn, sta


def write(cache, n, seed):
    g = torch.Generator().manual_seed(seed)
    cache.begin(n)
    for layer in range(cache.num_layers):
        k = torch.randn(1, cache.num_kv_heads, n, cache.head_dim, generator=g)
        cache.update(k, -k, layer)


def step_structure(cache):
    n, f = cache.step_tokens, cache.frame_tokens
    allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))
    if n > f + 1:
        allowed[f + 1, f] = False  # a "tree" row that does not see the first scratch token
    return allowed


def test_static_semantic_holds_what_semantic_cache_holds():
    dyn, sta = semantic_pair()
    for cache in (dyn, sta):
        write(cache, 4, seed=0)
        cache.end_prefix(4)
    sta.set_step_structure(step_structure(sta))
    F_ = sta.frame_tokens
    for t in range(20):
        write(dyn, F_ + 3, seed=t + 1)  # same K/V for the frame in both
        write(sta, F_ + 3, seed=t + 1)
        embeds = torch.full((F_ - 2, QWEN.hidden_size), float(t))
        end = dyn.next_position + 7
        assert dyn.commit_frame(embeds, end) == sta.commit_frame(embeds, end)
        assert dyn.frame_ids == sta.frame_ids and dyn.next_position == sta.next_position
        assert dyn.held_tokens == sta.held_tokens == sta.get_seq_length()
        for f in sta.frame_ids:
            assert dyn.frame_positions(f) == sta.frame_positions(f)
            assert torch.equal(dyn.frame_embeds(f), sta.frame_embeds(f))
        for layer in range(QWEN.num_hidden_layers):
            k_dyn = dyn._kv[layer, 0][:, :, dyn.token_index()]
            k_sta, v_sta = sta.layer_kv(layer)
            assert torch.equal(k_dyn, k_sta) and torch.equal(v_sta, -k_sta)
    assert sta.frame_ids == [0, 1, 17, 18, 19]


def test_static_semantic_mask_write_index_and_wrap_around():
    _, sta = semantic_pair(initial=1, recent=2, frame_tokens=4, prefix=3, scratch=4)
    write(sta, 3, seed=0)
    sta.end_prefix(3)
    allowed = step_structure(sta)
    sta.set_step_structure(allowed)
    F_, P, low = sta.frame_tokens, sta.prefix_len, torch.finfo(torch.float32).min
    ptr, generation = sta._kv.data_ptr(), sta.generation
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, low)
    for t in range(12):
        work = sta._work_slot
        mask = sta.step_mask()[0, 0]
        assert mask.shape == (sta.step_tokens, sta.capacity)
        assert torch.equal(sta.write_index[:F_], torch.arange(P + work * F_, P + (work + 1) * F_))
        assert torch.equal(sta.write_index[F_:],
                           torch.arange(sta.scratch_start, sta.scratch_start + 4))
        assert bool((mask[:, :P] == 0).all())
        for s, f in enumerate(sta._slot_frame):
            cols = mask[:, P + s * F_ : P + (s + 1) * F_]
            if s == work:
                assert torch.equal(cols, additive[:, :F_])
            elif f != -1:
                assert bool((cols == 0).all())
            else:
                assert bool((cols == low).all())
        assert torch.equal(mask[:, sta.scratch_start :], additive[:, F_:])
        write(sta, sta.step_tokens, seed=t)
        sta.commit_frame(torch.zeros(F_ - 2, QWEN.hidden_size), sta.next_position + 5)
    assert sta.frame_ids == [0, 10, 11]
    assert sta._kv.data_ptr() == ptr and sta.generation == generation


def test_static_semantic_reset_reuses_or_grows_the_buffers():
    _, sta = semantic_pair(scratch=3)
    generation, nbytes = sta.generation, sta.nbytes
    sta.reset(4, 2)  # smaller scratch: kept, the unused scratch is masked
    assert sta.generation == generation and sta.nbytes == nbytes
    assert (sta.frames_seen, sta.frame_ids, sta.next_position) == (0, [], 0)
    sta.reset(4, 9)  # larger: reallocated, captured graphs must go
    assert sta.generation == generation + 1 and sta.nbytes > nbytes
    sta.reset(5, 2)  # another prefix length: reallocated
    assert sta.generation == generation + 2
    expected = SemanticCache.capacity_for(
        MemoryConfig(semantic_initial=2, semantic_recent=3), 5, 5, 2)
    assert sta.capacity == expected


def test_static_semantic_without_sliding_window_keeps_only_initial_frames():
    _, sta = semantic_pair(initial=2, recent=0, scratch=1)
    write(sta, 4, seed=0)
    sta.end_prefix(4)
    sta.set_step_structure(step_structure(sta))
    evicted = []
    for t in range(4):
        write(sta, sta.step_tokens, seed=t)
        evicted.append(sta.commit_frame(torch.zeros(3, QWEN.hidden_size), sta.next_position + 1))
    assert evicted == [None, None, 2, 3] and sta.frame_ids == [0, 1]


def test_static_semantic_protocol_errors():
    _, sta = semantic_pair()
    with pytest.raises(ValueError, match="prefix"):
        sta.begin(3)
    write(sta, 4, seed=0)
    with pytest.raises(RuntimeError, match="set_step_structure"):
        sta.set_step_structure(torch.ones(1, 1, dtype=torch.bool))
    sta.end_prefix(4)
    with pytest.raises(RuntimeError, match="set_step_structure"):
        sta.begin(sta.step_tokens)
    with pytest.raises(ValueError, match="bool"):
        sta.set_step_structure(torch.ones(2, 2, dtype=torch.bool))
    sta.set_step_structure(step_structure(sta))
    with pytest.raises(ValueError, match="padded scratch"):
        sta.begin(sta.frame_tokens)
    sta.begin(sta.step_tokens)
    with pytest.raises(RuntimeError, match="missing"):
        sta.commit_frame(torch.zeros(3, QWEN.hidden_size), 10)
    sta.mark_written()
    with pytest.raises(ValueError, match="embeds"):
        sta.commit_frame(torch.zeros(1, 1), 10)
    assert sta.commit_frame(torch.zeros(3, QWEN.hidden_size), 10) is None
