"""Our VGGT aggregator: shapes, official names, parameter count, bad input, streaming."""

import math

import pytest
import torch

from janus_core.config import MemoryConfig, VGGTConfig, load_config
from janus_core.memory import SpatialCache
from janus_core.vggt import (
    DROPPED_VGGT_PREFIXES,
    VGGT,
    RotaryPositionEmbedding2D,
    apply_rope_2d,
    count_parameters,
)

TINY = load_config("tiny").vggt


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights (the default init makes special tokens ~1e-6 and layer scales 0.01)."""
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
            else:  # tokens, position embedding
                p.copy_(noise)
    return model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(VGGT(TINY)).eval()


def frames(b, s, h=28, w=42, seed=0):
    return torch.rand(b, s, 3, h, w, generator=torch.Generator().manual_seed(seed))


def new_cache(model, h=28, w=42, b=1, initial=8, recent=48):
    mem = MemoryConfig(spatial_initial=initial, spatial_recent=recent)
    return SpatialCache(TINY, mem, model.aggregator.tokens_per_frame(h, w), batch_size=b)


def test_forward_shapes_depth_and_patch_start(model):
    outs, patch_start = model(frames(2, 3))
    assert patch_start == 1 + TINY.num_register_tokens == 5
    assert len(outs) == TINY.depth
    for out in outs:
        assert out.shape == (2, 3, 5 + 2 * 3, 2 * TINY.embed_dim)
        assert torch.isfinite(out).all()


def test_release_geometry_490x644_gives_1615_tokens(model):
    images = torch.rand(1, 1, 3, 490, 644)
    assert model.aggregator.tokens_per_frame(490, 644) == 1615
    with torch.no_grad():
        outs, patch_start = model(images)
    assert outs[TINY.feature_layer].shape == (1, 1, 1615, TINY.feature_dim)
    assert outs[-1][:, :, patch_start:].shape[2] == 35 * 46


def test_backward_reaches_every_trained_part(model):
    model.zero_grad()
    outs, patch_start = model(frames(1, 2))
    outs[-2][:, :, patch_start:].square().mean().backward()
    agg = model.aggregator
    for name in (
        "camera_token",
        "register_token",
        "patch_embed.pos_embed",
        "patch_embed.patch_embed.proj.weight",
        "patch_embed.blocks.0.ls1.gamma",
        "frame_blocks.0.attn.k_norm.weight",
        "global_blocks.0.attn.qkv.weight",
    ):
        grad = agg.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # both special-token slots are used: slot 0 by frame 0, slot 1 by frame 1
    assert (agg.camera_token.grad[0, :, 0].abs().sum(-1) > 0).all()
    assert agg.patch_embed.mask_token.grad is None  # frozen, as in VGGT
    model.zero_grad()


def test_state_dict_uses_official_names():
    sd = VGGT(TINY).state_dict()
    C, R = TINY.embed_dim, TINY.num_register_tokens
    grid = TINY.img_size // TINY.patch_size
    expected_shapes = {
        "aggregator.camera_token": (1, 2, 1, C),
        "aggregator.register_token": (1, 2, R, C),
        "aggregator.patch_embed.cls_token": (1, 1, C),
        "aggregator.patch_embed.pos_embed": (1, grid * grid + 1, C),
        "aggregator.patch_embed.register_tokens": (1, TINY.patch_embed_num_register_tokens, C),
        "aggregator.patch_embed.mask_token": (1, C),
        "aggregator.patch_embed.patch_embed.proj.weight": (C, 3, 14, 14),
        "aggregator.patch_embed.blocks.0.ls1.gamma": (C,),
        "aggregator.patch_embed.norm.weight": (C,),
        "aggregator.global_blocks.0.attn.qkv.weight": (3 * C, C),
        "aggregator.global_blocks.0.attn.q_norm.weight": (C // TINY.num_heads,),
        "aggregator.frame_blocks.1.attn.k_norm.bias": (C // TINY.num_heads,),
        "aggregator.frame_blocks.1.mlp.fc2.weight": (C, 4 * C),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    block_keys = {k.split("global_blocks.0.", 1)[1] for k in sd if "global_blocks.0." in k}
    assert block_keys == {
        f"{m}.{p}"
        for m in ("norm1", "norm2", "attn.qkv", "attn.q_norm", "attn.k_norm", "attn.proj",
                  "mlp.fc1", "mlp.fc2")
        for p in ("weight", "bias")
    } | {"ls1.gamma", "ls2.gamma"}
    assert not any("q_norm" in k for k in sd if ".patch_embed.blocks." in k)  # DINOv2: no qk-norm
    assert not any("_resnet" in k for k in sd)  # non-persistent buffers
    assert all(k.startswith("aggregator.") for k in sd)


def test_layer_norm_eps_as_in_vggt():
    agg = VGGT(TINY).aggregator
    assert agg.patch_embed.norm.eps == agg.patch_embed.blocks[0].norm1.eps == 1e-6  # DINOv2
    block = agg.global_blocks[0]
    assert block.norm1.eps == block.norm2.eps == block.attn.q_norm.eps == 1e-5  # nn.LayerNorm


def test_checkpoint_style_keys_load_after_prefix_strip(model):
    """A JanusVLN-style ``vggt.*`` dict (with unused heads) loads strictly into a fresh VGGT."""
    ckpt = {f"vggt.{k}": v.clone() for k, v in model.state_dict().items()}
    ckpt["vggt.depth_head.projects.0.weight"] = torch.zeros(2, 2)
    ckpt["vggt.point_head.scratch.output_conv2.0.bias"] = torch.zeros(2)
    stripped = {k.removeprefix("vggt."): v for k, v in ckpt.items()}
    kept = {k: v for k, v in stripped.items() if not k.startswith(DROPPED_VGGT_PREFIXES)}
    fresh = VGGT(TINY)
    fresh.load_state_dict(kept, strict=True)
    x = frames(1, 2)
    with torch.no_grad():
        assert torch.equal(fresh(x)[0][-1], model(x)[0][-1])


def test_full_size_parameter_count_on_meta_device():
    with torch.device("meta"):
        full = VGGT(VGGTConfig())
    n = count_parameters(full)
    assert n == 909_112_320  # ~0.909 B, as the reference digest estimates
    assert count_parameters(full.aggregator.patch_embed) == 304_372_736
    assert full.aggregator.patch_embed.pos_embed.shape == (1, 37 * 37 + 1, 1024)
    assert full.aggregator.camera_token.shape == (1, 2, 1, 1024)
    assert full.aggregator.patch_start_idx == 5


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(1, 3, 28, 28), "5-D"),
        (torch.rand(1, 1, 4, 28, 28), "3 channels"),
        (torch.rand(1, 1, 3, 30, 28), "multiples of patch_size 14"),
        (torch.rand(1, 1, 3, 28, 29), "W=29"),
        (torch.zeros(1, 1, 3, 28, 28, dtype=torch.uint8), "floating point"),
        ([[0.0]], "5-D"),
    ],
)
def test_bad_images_raise_value_error_naming_the_problem(model, images, message):
    with pytest.raises(ValueError, match=message):
        model(images)


def test_mismatched_cache_raises(model):
    with pytest.raises(ValueError, match="tokens_per_frame"):
        model(frames(1, 1, h=28, w=28), cache=new_cache(model, h=28, w=42))
    with pytest.raises(ValueError, match="batch_size"):
        model(frames(2, 1), cache=new_cache(model, b=1))
    other = SpatialCache(load_config("full").vggt, MemoryConfig(), 11)
    with pytest.raises(ValueError, match="layers, heads, head_dim"):
        model(frames(1, 1), cache=other)
    with pytest.raises(TypeError, match="SpatialCache"):
        model(frames(1, 1), cache=[])


def test_cache_requires_no_grad(model):
    with pytest.raises(RuntimeError, match="inference-only"):
        model(frames(1, 1), cache=new_cache(model))


@torch.no_grad()
def test_first_frame_special_tokens(model):
    """Frame 0 (of a joint call, or of an episode) gets slot 0; every other frame slot 1."""
    a = frames(1, 1, seed=3)
    two = torch.cat([a, a], dim=1)
    joint_one, _ = model(a)
    joint_two, _ = model(two)
    frame_half = slice(0, TINY.embed_dim)
    # same image, different special tokens -> different frame-attention output at depth 0
    assert not torch.allclose(joint_two[0][:, 0, :, frame_half], joint_two[0][:, 1, :, frame_half])

    cache = new_cache(model)
    step0, _ = model(a, cache=cache)
    step1, _ = model(a, cache=cache)
    for d in range(TINY.depth):
        torch.testing.assert_close(step0[d], joint_one[d])  # episode frame 0 == a lone frame
    torch.testing.assert_close(step1[0][..., frame_half], joint_two[0][:, 1:, :, frame_half])
    cache.reset()
    again, _ = model(a, cache=cache)  # a new episode starts with the first-frame tokens again
    torch.testing.assert_close(again[-1], joint_one[-1])


@torch.no_grad()
def test_joint_vs_causal_streaming_differ_only_as_expected(model):
    S = 4
    images = frames(1, S, seed=5)
    joint, _ = model(images)
    cache = new_cache(model)
    stream, _ = model(images, cache=cache)  # S > 1 with a cache: one frame after another
    assert cache.frame_ids == list(range(S))
    C = TINY.embed_dim
    # depth 0: frame attention is per frame, and the last frame's global attention sees exactly
    # the same keys (every frame's layer-0 K/V) in both modes
    torch.testing.assert_close(stream[0][..., :C], joint[0][..., :C])
    torch.testing.assert_close(stream[0][:, -1], joint[0][:, -1])
    # the first frame streamed alone equals a one-frame joint call
    alone, _ = model(images[:, :1])
    for d in range(TINY.depth):
        torch.testing.assert_close(stream[d][:, 0], alone[d][:, 0])
    # deeper, joint frames see the future (bidirectional) and streamed ones do not
    assert (stream[-1][:, 0] - joint[-1][:, 0]).abs().max() > 1e-3
    assert (stream[-1][:, -1] - joint[-1][:, -1]).abs().max() > 1e-3


def test_rope_depends_only_on_relative_position():
    rope = RotaryPositionEmbedding2D(100.0)
    head_dim = 16
    cos, sin = rope.tables(5, 6, num_special=5, head_dim=head_dim, device=torch.device("cpu"))
    assert cos.shape == sin.shape == (5 + 30, head_dim)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(head_dim, generator=g), torch.randn(head_dim, generator=g)
    q_rot = apply_rope_2d(q.expand(35, head_dim), cos, sin)
    k_rot = apply_rope_2d(k.expand(35, head_dim), cos, sin)
    torch.testing.assert_close(q_rot[:5], q.expand(5, head_dim))  # special tokens: no rotation
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm().expand(35))

    def idx(y, x):  # patch (y, x) in row-major order after the 5 special tokens
        return 5 + y * 6 + x

    # same offset (dy, dx) = (1, 2) at two places in the grid -> same score
    s1 = q_rot[idx(0, 0)] @ k_rot[idx(1, 2)]
    s2 = q_rot[idx(3, 3)] @ k_rot[idx(4, 5)]
    torch.testing.assert_close(s1, s2)
    assert not torch.allclose(s1, q_rot[idx(0, 0)] @ k_rot[idx(2, 1)])  # (2, 1) is not (1, 2)
