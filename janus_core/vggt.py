"""Our own VGGT aggregator (the spatial encoder of JanusVLN), with the official parameter names.

Only the aggregator of VGGT-1B is built: JanusVLN uses the second-to-last aggregator output of the
current frame and never calls the depth, point, camera or track heads (their checkpoint keys are
listed in :data:`DROPPED_VGGT_PREFIXES` for the loader to skip). Attribute names and nesting match
``facebookresearch/vggt`` exactly, so ``vggt.aggregator.*`` keys from a JanusVLN checkpoint load
into :class:`VGGT` after stripping the ``vggt.`` prefix, with no rename table.

::

    images [B, S, 3, H, W] in [0, 1]
      | (x - resnet_mean) / resnet_std
      v
    patch_embed: DINOv2 ViT-L/14 + 4 registers -> patch tokens [B*S, h*w, C]  (h, w = H/14, W/14)
      | prepend camera_token[slot] (1) + register_token[slot] (4)   slot 0: first frame,
      v                                                             slot 1: other frames
    tokens [B*S, P, C], P = 5 + h*w
      | for i in 0..23:
      |    frame_blocks[i]  : attention within each frame   tokens [B*S, P, C] -> frame_out_i
      |    global_blocks[i] : attention across frames       tokens [B, S*P, C] -> global_out_i
      |                       (with a SpatialCache: the new frame attends to the cached K/V too)
      |    output_i = cat(frame_out_i, global_out_i)  [B, S, P, 2C]
      v
    ([output_0 .. output_23], patch_start_idx = 5)

Every attention block in the trunk applies q/k LayerNorm and then 2D RoPE (frequency 100) with the
same patch coordinates in every frame (special tokens at position (0, 0), patch (y, x) at
(y + 1, x + 1)); there is no temporal position, so cached keys never need re-rotating.

Size: at VGGT-1B size (``VGGTConfig()`` defaults) the aggregator holds 909,112,320 parameters
(about 0.909 B): the DINOv2 embedder 304,372,736 (24 blocks of 12,598,272, the position embedding
for a 37x37 grid + cls, patch conv, tokens, final norm), 48 trunk blocks of 12,598,528 each, and
10,240 in ``camera_token`` + ``register_token``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from janus_core.config import VGGTConfig
from janus_core.memory import SpatialCache

# Checkpoint key prefixes (after stripping ``vggt.``) of the VGGT heads we do not build.
DROPPED_VGGT_PREFIXES = ("depth_head.", "point_head.", "camera_head.", "track_head.")

_RESNET_MEAN = (0.485, 0.456, 0.406)
_RESNET_STD = (0.229, 0.224, 0.225)

# The DINOv2 embedder's LayerNorms use eps 1e-6; the aggregator trunk (and q/k norms) use the
# nn.LayerNorm default 1e-5, as in the official code.
_DINO_NORM_EPS = 1e-6
_TRUNK_NORM_EPS = 1e-5
_DINO_INIT_VALUES = 1.0  # LayerScale init of the DINOv2 blocks (VGGT passes 1.0)


# ---- 2D rotary position embedding ---------------------------------------------------------------
class RotaryPositionEmbedding2D(nn.Module):
    """2D RoPE: the first half of each head rotates with the row, the second with the column.

    Within each half (d = head_dim / 2 channels) the rotation follows the "rotate half" layout:
    channel j and j + d/2 form a pair with angle ``pos / freq ** (2j / d)``. Holds no parameters.
    """

    def __init__(self, frequency: float = 100.0):
        super().__init__()
        self.frequency = float(frequency)

    def tables(
        self, grid_h: int, grid_w: int, num_special: int, head_dim: int, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Cos and sin tables for one frame's tokens, each [num_special + grid_h*grid_w, head_dim].

        Special tokens sit at position (0, 0) (identity rotation); the patch at row y, column x
        (row-major order) sits at (y + 1, x + 1), matching VGGT. Computed in float32.
        """
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
        half = head_dim // 2
        inv_freq = self.frequency ** -(
            torch.arange(0, half, 2, device=device, dtype=torch.float32) / half
        )  # [half/2]
        ys = torch.arange(grid_h, device=device).repeat_interleave(grid_w) + 1  # [h*w]
        xs = torch.arange(grid_w, device=device).repeat(grid_h) + 1
        zeros = torch.zeros(num_special, dtype=ys.dtype, device=device)
        ys, xs = torch.cat([zeros, ys]), torch.cat([zeros, xs])  # [P]

        def angles(pos: Tensor) -> Tensor:  # [P] -> [P, half]
            a = pos.float()[:, None] * inv_freq[None, :]
            return torch.cat([a, a], dim=-1)

        ang = torch.cat([angles(ys), angles(xs)], dim=-1)  # [P, head_dim]
        return ang.cos(), ang.sin()


def apply_rope_2d(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` [..., N, head_dim] with tables ``cos``/``sin`` [N, head_dim] (see above)."""

    def rotate_half(t: Tensor) -> Tensor:
        t1, t2 = t.chunk(2, dim=-1)
        return torch.cat([-t2, t1], dim=-1)

    rows, cols = x.chunk(2, dim=-1)
    rotated = torch.cat([rotate_half(rows), rotate_half(cols)], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


# ---- transformer block (shared by the DINOv2 embedder and the aggregator trunk) -----------------
class LayerScale(nn.Module):
    """Per-channel learned scale ``gamma`` [dim]."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        """[..., dim] -> [..., dim]."""
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """[..., dim] -> [..., dim]."""
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with optional q/k LayerNorm, 2D RoPE and a K/V cache.

    Order as in VGGT: qkv projection, q/k LayerNorm, RoPE on q and k, SDPA, output projection.
    With ``cache`` (global blocks in streaming mode), this frame's normalised and rotated K/V are
    written into the cache and the queries attend over every held frame plus this one.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, norm_eps: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: SpatialCache | None = None,
        layer: int = 0,
    ) -> Tensor:
        """Map x [B, N, C] to [B, N, C]; ``rope`` is (cos, sin), tables [N, head_dim]."""
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope_2d(q, *rope), apply_rope_2d(k, *rope)
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            k_all, v_all = cache.append(layer, k, v)  # [B, heads, held*N + N, head_dim], views
            out = F.scaled_dot_product_attention(
                q.to(k_all.dtype), k_all, v_all, attn_mask=cache.attention_mask()
            ).to(x.dtype)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qk_norm: bool,
        init_values: float,
        norm_eps: float,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, norm_eps=_TRUNK_NORM_EPS)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: SpatialCache | None = None,
        layer: int = 0,
    ) -> Tensor:
        """Map x [B, N, C] to [B, N, C]."""
        x = x + self.ls1(self.attn(self.norm1(x), rope=rope, cache=cache, layer=layer))
        return x + self.ls2(self.mlp(self.norm2(x)))


# ---- DINOv2 patch embedder ----------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Non-overlapping patches: Conv2d(3, C, patch, stride=patch), then flatten row-major."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] -> [N, (H/p)*(W/p), C]."""
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with registers (``dinov2_vitl14_reg`` at full size), returning patch tokens.

    Token layout inside: [cls, registers, patches]; the learned position embedding covers cls +
    the (img_size / patch)^2 training grid (37x37 at 518 px) and is resized bicubically (antialias,
    no offset) to the actual grid. The output is the final-LayerNorm patch tokens only (DINOv2's
    ``x_norm_patchtokens``).
    """

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.patch_embed_num_register_tokens
        self.grid = cfg.img_size // cfg.patch_size  # side of the trained position grid
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, self.num_register_tokens, dim))
            if self.num_register_tokens
            else None
        )
        self.blocks = nn.ModuleList(
            Block(
                dim,
                cfg.patch_embed_num_heads,
                cfg.mlp_ratio,
                qk_norm=False,
                init_values=_DINO_INIT_VALUES,
                norm_eps=_DINO_NORM_EPS,
            )
            for _ in range(cfg.patch_embed_depth)
        )
        self.norm = nn.LayerNorm(dim, eps=_DINO_NORM_EPS)
        # Unused at inference (DINOv2 masked-image training); kept so the checkpoint key loads.
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> Tensor:
        """Position embedding for a grid_h x grid_w patch grid: [1, 1 + grid_h*grid_w, C]."""
        if (grid_h, grid_w) == (self.grid, self.grid):
            return self.pos_embed.to(dtype)
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        dim = pos.shape[-1]
        patch_pos = patch_pos.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bicubic", antialias=True)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([cls_pos, patch_pos], dim=1).to(dtype)

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images [N, 3, H, W] -> patch tokens [N, (H/p)*(W/p), C]."""
        n, _, height, width = images.shape
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(n, -1, -1).to(x.dtype), x], dim=1)
        x = x + self.interpolate_pos_encoding(
            height // self.patch_size, width // self.patch_size, x.dtype
        )
        if self.register_tokens is not None:
            regs = self.register_tokens.expand(n, -1, -1).to(x.dtype)
            x = torch.cat([x[:, :1], regs, x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, 1 + self.num_register_tokens :])


# ---- the aggregator -----------------------------------------------------------------------------
class Aggregator(nn.Module):
    """VGGT's alternating-attention aggregator (``aa_order`` frame then global, block size 1).

    ``forward(images, cache=None)``:

    * ``cache=None``: the S frames of the call are processed jointly (bidirectional global
      attention), frame 0 of the call gets the first-frame special tokens. This is VGGT's forward.
    * ``cache=SpatialCache``: each new frame (S is normally 1; several are processed one after
      another) attends in every global block to the K/V of the frames held in the cache plus its
      own, then its K/V are kept (the cache evicts as its windows say). The frame gets the
      first-frame special tokens only if ``cache.frames_seen == 0`` (episode frame 0). This is the
      JanusVLN streaming step. It is inference-only: the cache stores tensors without autograd.
    """

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.embed_dim = dim
        self.num_heads = cfg.num_heads
        self.depth = cfg.depth
        self.aa_order = ("frame", "global")
        self.aa_block_size = 1
        self.patch_embed = DinoVisionTransformer(cfg)
        self.rope = RotaryPositionEmbedding2D(cfg.rope_freq) if cfg.rope_freq > 0 else None

        def trunk_block() -> Block:
            return Block(
                dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                qk_norm=cfg.qk_norm,
                init_values=cfg.init_values,
                norm_eps=_TRUNK_NORM_EPS,
            )

        self.frame_blocks = nn.ModuleList(trunk_block() for _ in range(cfg.depth))
        self.global_blocks = nn.ModuleList(trunk_block() for _ in range(cfg.depth))
        # Slot 0: the first frame (the world reference); slot 1: every other frame.
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, dim))
        self.patch_start_idx = 1 + cfg.num_register_tokens
        mean, std = torch.tensor(_RESNET_MEAN), torch.tensor(_RESNET_STD)
        self.register_buffer("_resnet_mean", mean.view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("_resnet_std", std.view(1, 1, 3, 1, 1), persistent=False)

    def tokens_per_frame(self, height: int, width: int) -> int:
        """Tokens one frame occupies in every block (and in the cache): specials + patches."""
        return self.patch_start_idx + (height // self.patch_size) * (width // self.patch_size)

    def _check_images(self, images: Tensor) -> tuple[int, int, int, int]:
        if not isinstance(images, Tensor) or images.ndim != 5:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a 5-D tensor [B, S, 3, H, W], got {shape}")
        B, S, channels, H, W = images.shape
        if channels != 3:
            raise ValueError(f"images must have 3 channels (dim 2), got {channels}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        p = self.patch_size
        if H <= 0 or W <= 0 or H % p or W % p:
            raise ValueError(
                f"image height and width must be positive multiples of patch_size {p}, "
                f"got H={H}, W={W}"
            )
        if B == 0 or S == 0:
            raise ValueError(f"images must hold a frame, got shape {tuple(images.shape)}")
        return B, S, H, W

    def _check_cache(self, cache: SpatialCache, B: int, H: int, W: int) -> None:
        if not isinstance(cache, SpatialCache):
            raise TypeError(f"cache must be a SpatialCache or None, got {type(cache).__name__}")
        expected = (self.depth, self.num_heads, self.embed_dim // self.num_heads)
        got = (cache.num_layers, cache.num_heads, cache.head_dim)
        if got != expected:
            raise ValueError(
                f"cache (layers, heads, head_dim) {got} does not match the aggregator {expected}"
            )
        if cache.tokens_per_frame != self.tokens_per_frame(H, W):
            raise ValueError(
                f"cache.tokens_per_frame is {cache.tokens_per_frame} but {H}x{W} images give "
                f"{self.tokens_per_frame(H, W)} tokens per frame"
            )
        if cache.batch_size != B:
            raise ValueError(f"cache.batch_size is {cache.batch_size} but images have B={B}")

    def _special_tokens(self, token: Tensor, B: int, S: int,
                        first_is_reference: bool | Tensor) -> Tensor:
        """[1, 2, n, C] -> [B*S, n, C]: slot 0 for frame 0 if it is the reference, else slot 1.

        ``first_is_reference`` may be a 0-d bool tensor (read on the device, no host sync: the
        fixed-shape streaming step replays one CUDA graph for episode frame 0 and the others).
        """
        if isinstance(first_is_reference, Tensor):
            frame0 = torch.where(first_is_reference, token[0, 0], token[0, 1])[None]  # [1, n, C]
            per_frame = torch.cat([frame0, token[0, 1:2].expand(S - 1, -1, -1)])  # [S, n, C]
        else:
            slots = [0 if (i == 0 and first_is_reference) else 1 for i in range(S)]
            per_frame = token[0, slots]  # [S, n, C]
        return per_frame.unsqueeze(0).expand(B, -1, -1, -1).reshape(B * S, *token.shape[2:])

    def embed_frames(self, images: Tensor, first_is_reference: bool | Tensor) -> Tensor:
        """Checked images [B, S, 3, H, W] -> input tokens [B*S, P, C] of the alternating trunk.

        Normalises, runs the DINOv2 embedder and prepends camera + register tokens (slot 0 for
        frame 0 when ``first_is_reference``, slot 1 otherwise; a 0-d bool tensor is allowed).
        """
        B, S, _, H, W = images.shape
        x = (images - self._resnet_mean) / self._resnet_std
        patches = self.patch_embed(x.reshape(B * S, 3, H, W))  # [B*S, h*w, C]
        camera = self._special_tokens(self.camera_token, B, S, first_is_reference)
        registers = self._special_tokens(self.register_token, B, S, first_is_reference)
        return torch.cat([camera.to(patches.dtype), registers.to(patches.dtype), patches], dim=1)

    def rope_tables(self, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """RoPE (cos, sin) for one frame's tokens, each [P, head_dim] (float32)."""
        if self.rope is None:
            raise ValueError("this aggregator has no RoPE (rope_freq <= 0)")
        p = self.patch_size
        head_dim = self.embed_dim // self.num_heads
        return self.rope.tables(height // p, width // p, self.patch_start_idx, head_dim, device)

    def forward(
        self, images: Tensor, cache: SpatialCache | None = None
    ) -> tuple[list[Tensor], int]:
        """Map images [B, S, 3, H, W] in [0, 1] to ([depth x [B, S, P, 2C]], patch_start_idx).

        P = patch_start_idx + (H/14)*(W/14); output i = cat(frame_blocks[i] output,
        global_blocks[i] output) along channels. Patch tokens are ``out[:, :, patch_start_idx:]``
        in row-major grid order.
        """
        B, S, H, W = self._check_images(images)
        if cache is not None:
            self._check_cache(cache, B, H, W)
            if S > 1:  # causal: one frame at a time, each sees the ones before it via the cache
                steps = [self.forward(images[:, i : i + 1], cache)[0] for i in range(S)]
                return [torch.cat(d, dim=1) for d in zip(*steps)], self.patch_start_idx

        x = self.embed_frames(images, first_is_reference=cache is None or cache.frames_seen == 0)
        _, P, C = x.shape  # x: [B*S, P, C]
        frame_rope = global_rope = None
        if self.rope is not None:
            cos, sin = self.rope_tables(H, W, images.device)
            frame_rope, global_rope = (cos, sin), (cos.repeat(S, 1), sin.repeat(S, 1))

        outputs = []
        for i, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            x = frame_block(x, rope=frame_rope)  # [B*S, P, C]
            frame_out = x.view(B, S, P, C)
            x = global_block(x.view(B, S * P, C), rope=global_rope, cache=cache, layer=i)
            outputs.append(torch.cat([frame_out, x.view(B, S, P, C)], dim=-1))
            x = x.view(B * S, P, C)
        if cache is not None:
            cache.commit()
        return outputs, self.patch_start_idx


class VGGT(nn.Module):
    """VGGT-1B without heads: just ``.aggregator``, so state-dict keys are ``aggregator.*``.

    Load a JanusVLN checkpoint's ``vggt.*`` tensors after stripping ``vggt.`` and dropping keys
    that start with one of :data:`DROPPED_VGGT_PREFIXES`.
    """

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        self.config = cfg
        self.aggregator = Aggregator(cfg)
        self.apply(_init_weights)
        _init_tokens(self.aggregator)

    def forward(
        self, images: Tensor, cache: SpatialCache | None = None
    ) -> tuple[list[Tensor], int]:
        """Same as :meth:`Aggregator.forward`."""
        return self.aggregator(images, cache)


def _init_weights(module: nn.Module) -> None:
    """Random init as in VGGT/DINOv2 (real use loads a checkpoint over it)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _init_tokens(agg: Aggregator) -> None:
    nn.init.trunc_normal_(agg.patch_embed.pos_embed, std=0.02)
    nn.init.normal_(agg.patch_embed.cls_token, std=1e-6)
    if agg.patch_embed.register_tokens is not None:
        nn.init.normal_(agg.patch_embed.register_tokens, std=1e-6)
    nn.init.normal_(agg.camera_token, std=1e-6)
    nn.init.normal_(agg.register_token, std=1e-6)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the ``meta`` device)."""
    return sum(math.prod(p.shape) for p in module.parameters())
