"""SpatialCache against a release-style reference (pre-norm/pre-RoPE K, re-applied every step).

``ReleaseSpatialCache`` and ``reference_forward`` below re-state the release's behaviour
(JanusVLN's vendored VGGT aggregator + ``StartRecentKVCache``) using only the parameters of our
model: their own RoPE (VGGT's table-lookup formulation), their own DINOv2 token assembly, and a
cache that stores K before q/k LayerNorm and RoPE, concatenates every step and trims after it.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from janus_core.config import MemoryConfig, load_config
from janus_core.memory import SpatialCache
from janus_core.vggt import VGGT

TINY = load_config("tiny").vggt
TINY_MEMORY = load_config("tiny").memory  # 2 initial + 4 recent
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)


# ---- release-style reference --------------------------------------------------------------------
class ReleaseSpatialCache:
    """Per global block: K (pre q/k-norm, pre-RoPE) and V as [B, heads, frames, tokens, head_dim].

    ``update`` concatenates the new frame and returns every cached frame; ``trim`` (after the
    whole aggregator call) keeps the first ``start`` and the last ``recent`` frames.
    """

    def __init__(self, depth, start, recent):
        self.kv = [None] * depth
        self.start, self.recent = start, recent
        self.frame_ids = []
        self.seen = 0

    def __len__(self):
        return len(self.frame_ids)

    def update(self, layer, k, v):
        k5, v5 = k.unsqueeze(2), v.unsqueeze(2)
        if self.kv[layer] is not None:
            k5 = torch.cat([self.kv[layer][0], k5], dim=2)
            v5 = torch.cat([self.kv[layer][1], v5], dim=2)
        self.kv[layer] = (k5, v5)
        B, H, n, T, D = k5.shape
        return k5.reshape(B, H, n * T, D), v5.reshape(B, H, n * T, D)

    def trim(self):
        self.frame_ids.append(self.seen)
        self.seen += 1
        n = len(self.frame_ids)
        if n <= self.start + self.recent:
            return
        keep = list(range(self.start)) + list(range(n - self.recent, n))
        self.frame_ids = [self.frame_ids[i] for i in keep]
        index = torch.tensor(keep)
        self.kv = [(k.index_select(2, index), v.index_select(2, index)) for k, v in self.kv]


def ref_rope(x, pos, freq):
    """VGGT's RoPE2D: x [B, H, N, D], pos [B, N, 2] (y, x) -> rotated x."""
    d = x.shape[-1] // 2
    inv_freq = 1.0 / freq ** (torch.arange(0, d, 2).float() / d)
    angles = torch.einsum("i,j->ij", torch.arange(int(pos.max()) + 1).float(), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos(), angles.sin()

    def rope1d(t, p):
        c, s = F.embedding(p, cos)[:, None], F.embedding(p, sin)[:, None]
        t1, t2 = t.chunk(2, dim=-1)
        return t * c + torch.cat([-t2, t1], dim=-1) * s

    y, xx = x.chunk(2, dim=-1)
    return torch.cat([rope1d(y, pos[..., 0]), rope1d(xx, pos[..., 1])], dim=-1)


def ref_positions(n, h, w, num_special):
    grid = torch.cartesian_prod(torch.arange(h), torch.arange(w)) + 1
    pos = torch.cat([torch.zeros(num_special, 2, dtype=torch.long), grid])
    return pos[None].expand(n, -1, -1)


def ref_attention(attn, x, pos, freq, rcache=None, layer=0):
    B, N, C = x.shape
    H = attn.num_heads
    q, k, v = attn.qkv(x).reshape(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
    k_pos = pos
    if rcache is not None:
        k, v = rcache.update(layer, k, v)  # stored before norm and RoPE...
        k_pos = pos.repeat(1, k.shape[2] // N, 1)
    q, k = attn.q_norm(q), attn.k_norm(k)  # ...so both are re-applied to every cached key
    if pos is not None:
        q, k = ref_rope(q, pos, freq), ref_rope(k, k_pos, freq)
    out = F.scaled_dot_product_attention(q, k, v)
    return attn.proj(out.transpose(1, 2).reshape(B, N, C))


def ref_block(block, x, pos, freq, rcache=None, layer=0):
    x = x + block.ls1.gamma * ref_attention(block.attn, block.norm1(x), pos, freq, rcache, layer)
    return x + block.ls2.gamma * block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))


def reference_forward(agg, images, rcache=None):
    """Release aggregator step: joint over S frames, or one frame against ``rcache``."""
    B, S, _, H, W = images.shape
    p, freq, C = agg.patch_size, agg.rope.frequency, agg.embed_dim
    h, w = H // p, W // p
    x = ((images - MEAN) / STD).reshape(B * S, 3, H, W)
    dino = agg.patch_embed
    conv = dino.patch_embed.proj
    t = F.conv2d(x, conv.weight, conv.bias, stride=p).flatten(2).transpose(1, 2)
    t = torch.cat([dino.cls_token.expand(B * S, -1, -1), t], dim=1)
    M = int(math.sqrt(dino.pos_embed.shape[1] - 1))
    grid = dino.pos_embed[:, 1:].reshape(1, M, M, C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
    t = t + torch.cat([dino.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, C)], 1)
    t = torch.cat([t[:, :1], dino.register_tokens.expand(B * S, -1, -1), t[:, 1:]], dim=1)
    for block in dino.blocks:
        t = ref_block(block, t, None, freq)
    patches = dino.norm(t)[:, 1 + dino.register_tokens.shape[1] :]

    first = rcache is None or len(rcache) == 0
    slots = torch.tensor([0 if (i == 0 and first) else 1 for i in range(S)])

    def special(token):
        return token[0, slots].repeat(B, 1, 1)

    tokens = torch.cat([special(agg.camera_token), special(agg.register_token), patches], dim=1)
    P = tokens.shape[1]
    pos = ref_positions(B * S, h, w, agg.patch_start_idx)
    outputs = []
    for i in range(agg.depth):
        tokens = ref_block(agg.frame_blocks[i], tokens, pos, freq)
        frame_out = tokens.reshape(B, S, P, C)
        tokens = ref_block(
            agg.global_blocks[i], tokens.reshape(B, S * P, C), pos.reshape(B, S * P, 2), freq,
            rcache, i,
        )
        outputs.append(torch.cat([frame_out, tokens.reshape(B, S, P, C)], dim=-1))
        tokens = tokens.reshape(B * S, P, C)
    if rcache is not None:
        rcache.trim()
    return outputs


# ---- fixtures -----------------------------------------------------------------------------------
def randomize_(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.25 * noise.abs())
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif name.endswith(("qkv.weight", "proj.weight", "fc1.weight", "fc2.weight")):
                p.copy_(noise / math.sqrt(p[0].numel()))
            else:
                p.copy_(noise)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def agg():
    return randomize_(VGGT(TINY)).aggregator


def video(n, b=1, h=28, w=42, seed=0):
    return torch.rand(b, n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def make_cache(agg, memory=TINY_MEMORY, b=1, h=28, w=42, **kw):
    return SpatialCache(TINY, memory, agg.tokens_per_frame(h, w), batch_size=b, **kw)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---- tests --------------------------------------------------------------------------------------
def test_joint_forward_matches_reference(agg):
    images = video(3, b=2, h=42, w=28, seed=1)
    ours, _ = agg(images)
    ref = reference_forward(agg, images)
    for d in range(TINY.depth):
        close(ours[d], ref[d])


@pytest.mark.parametrize("batch", [1, 2])
def test_streaming_matches_release_cache_through_eviction(agg, batch):
    n = 12  # > initial + recent = 6, so eviction happens 6 times
    images = video(n, b=batch, seed=2)
    cache = make_cache(agg, b=batch)
    rcache = ReleaseSpatialCache(TINY.depth, TINY_MEMORY.spatial_initial,
                                 TINY_MEMORY.spatial_recent)
    for t in range(n):
        ours, _ = agg(images[:, t : t + 1], cache=cache)
        ref = reference_forward(agg, images[:, t : t + 1], rcache)
        for d in range(TINY.depth):
            close(ours[d], ref[d])
        assert cache.frame_ids == rcache.frame_ids
        assert cache.frames_seen == t + 1
    assert cache.frame_ids == [0, 1, 8, 9, 10, 11]


@pytest.mark.parametrize("initial, recent", [(0, 3), (2, 0), (1, 1)])
def test_other_window_sizes_match_release(agg, initial, recent):
    memory = MemoryConfig(spatial_initial=initial, spatial_recent=recent)
    cache = make_cache(agg, memory)
    rcache = ReleaseSpatialCache(TINY.depth, initial, recent)
    images = video(6, seed=3)
    for t in range(6):
        ours, _ = agg(images[:, t : t + 1], cache=cache)
        ref = reference_forward(agg, images[:, t : t + 1], rcache)
        close(ours[-2], ref[-2])
        assert cache.frame_ids == rcache.frame_ids
    assert cache.num_frames == min(6, initial + recent)


def test_after_100_steps_windows_size_and_first_frame(agg):
    images = video(100, h=28, w=28, seed=4)
    cache = make_cache(agg, h=28, w=28)
    agg(images[:, :1], cache=cache)
    first_kv = [tuple(t.clone() for t in cache.frame_kv(i, 0)) for i in range(TINY.depth)]
    for t in range(1, 100):
        agg(images[:, t : t + 1], cache=cache)
    initial, recent = TINY_MEMORY.spatial_initial, TINY_MEMORY.spatial_recent
    assert cache.frames_seen == 100
    assert cache.frame_ids == list(range(initial)) + list(range(100 - recent, 100))
    assert cache.num_frames == initial + recent

    tokens, heads = agg.tokens_per_frame(28, 28), TINY.num_heads
    head_dim, itemsize = TINY.embed_dim // heads, 4
    formula = TINY.depth * 2 * 1 * heads * (initial + recent) * tokens * head_dim * itemsize
    assert SpatialCache.size_bytes(TINY, TINY_MEMORY, tokens, torch.float32,
                                   working_slot=False) == formula
    with_slot = SpatialCache.size_bytes(TINY, TINY_MEMORY, tokens, torch.float32)
    assert with_slot == formula * (initial + recent + 1) // (initial + recent)
    assert cache.nbytes == with_slot

    # episode frame 0 (first-frame special tokens, the world reference) is never touched
    for layer in range(TINY.depth):
        k, v = cache.frame_kv(layer, 0)
        assert torch.equal(k, first_kv[layer][0]) and torch.equal(v, first_kv[layer][1])
    with pytest.raises(KeyError, match="not held"):
        cache.frame_kv(0, initial)  # evicted long ago


def test_full_size_formula():
    full = load_config("full")
    per_frame = 24 * 2 * 16 * 1615 * 64 * 2  # ~158.8 MB in bf16
    assert per_frame == 158_760_960
    assert SpatialCache.size_bytes(full.vggt, full.memory, 1615, torch.bfloat16,
                                   working_slot=False) == 56 * per_frame
    assert SpatialCache.size_bytes(full.vggt, full.memory, 1615, torch.bfloat16) == 57 * per_frame
    assert SpatialCache.size_bytes(full.vggt, full.memory, 1615, torch.float32,
                                   batch_size=2) == 2 * 2 * 57 * per_frame


def test_reset_reuses_the_buffer_and_restarts_the_episode(agg):
    images = video(8, seed=5)
    cache = make_cache(agg)
    first, _ = agg(images[:, :1], cache=cache)
    for t in range(1, 8):
        agg(images[:, t : t + 1], cache=cache)
    nbytes, ptr = cache.nbytes, cache._kv.data_ptr()
    cache.reset()
    assert (cache.frames_seen, cache.num_frames, cache.frame_ids) == (0, 0, [])
    again, _ = agg(images[:, :1], cache=cache)
    assert cache.nbytes == nbytes and cache._kv.data_ptr() == ptr
    for d in range(TINY.depth):
        torch.testing.assert_close(again[d], first[d], rtol=0, atol=0)


def test_a_failed_step_leaves_the_cache_unchanged(agg):
    images = video(3, seed=6)
    cache, clean = make_cache(agg), make_cache(agg)
    for t in range(2):
        agg(images[:, t : t + 1], cache=cache)
        agg(images[:, t : t + 1], cache=clean)
    garbage = torch.full((1, TINY.num_heads, cache.tokens_per_frame, TINY.embed_dim // 2), 9.0)
    cache.append(0, garbage, garbage)  # a step that died after its first global block
    with pytest.raises(RuntimeError, match="missing"):
        cache.commit()
    assert cache.frame_ids == [0, 1]
    ours, _ = agg(images[:, 2:3], cache=cache)
    ref, _ = agg(images[:, 2:3], cache=clean)
    torch.testing.assert_close(ours[-1], ref[-1], rtol=0, atol=0)


def test_append_validates_its_input(agg):
    cache = make_cache(agg)
    ok = torch.zeros(1, TINY.num_heads, cache.tokens_per_frame, TINY.embed_dim // TINY.num_heads)
    with pytest.raises(ValueError, match="shape"):
        cache.append(0, ok[:, :, :-1], ok[:, :, :-1])
    with pytest.raises(ValueError, match="layer"):
        cache.append(TINY.depth, ok, ok)
    with pytest.raises(RuntimeError, match="inference-only"):
        cache.append(0, ok.clone().requires_grad_(), ok)
    with pytest.raises(ValueError, match="tokens_per_frame"):
        SpatialCache(TINY, TINY_MEMORY, 0)
    with pytest.raises(ValueError, match="spatial_recent"):
        SpatialCache(TINY, MemoryConfig(spatial_recent=-1), 11)
    assert cache.nbytes == 0  # nothing allocated by failed writes


def test_bfloat16_cache_with_float32_model(agg):
    images = video(4, seed=7)
    c32, c16 = make_cache(agg), make_cache(agg, dtype=torch.bfloat16)
    for t in range(4):
        a, _ = agg(images[:, t : t + 1], cache=c32)
        b, _ = agg(images[:, t : t + 1], cache=c16)
    assert c16._kv.dtype == torch.bfloat16 and b[-1].dtype == torch.float32
    assert c16.nbytes * 2 == c32.nbytes
    torch.testing.assert_close(b[-1], a[-1], rtol=0.05, atol=0.05)
