"""The three stages of a streaming step on static buffers: ViT, VGGT step, LLM step.

Each stage object owns fixed-shape input and output tensors and a ``run()`` that reads the
inputs and writes the outputs in place, with no host sync and no tensor made from host data, so
:class:`janus_core.cuda_graphs.StageGraphs` can capture ``run`` once and replay it every step
(on a CPU, or with graphs off, ``run`` is simply called). The caller copies a step's inputs in
(``load``/``set_positions``) before ``run`` and does the caches' bookkeeping after it.

- :class:`StaticViT`: the Qwen2.5-VL vision tower on one image of the fixed grid. The tables
  the stock forward derives from ``grid_thw`` on the host every call (rotary angles, window
  order, ``cu_seqlens`` and the packed-attention plans) are computed once here.
- :class:`StaticVGGTStep`: the lean VGGT step (:func:`janus_core.vggt_step.lean_vggt_embeds`)
  against a :class:`~janus_core.static_memory.StaticSpatialCache`, merger included.
- :class:`StaticLLMStep`: fusion (``vit + lam * vggt``), the LLM forward over the new frame, the
  step text and the four candidates (padded to a length bucket, :func:`bucket_length`) against a
  :class:`~janus_core.static_memory.StaticSemanticCache`, and the candidates' scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from janus_core.actions import Action
from janus_core.compat import vision_rope_and_windows
from janus_core.llm_attention import decoder_forward
from janus_core.model import JanusVLNModel
from janus_core.static_memory import StaticSemanticCache, StaticSpatialCache
from janus_core.vggt_step import lean_vggt_embeds
from janus_core.vision_attention import PackedWindowVisionAttention

# Padded lengths of a step's text + candidates (the scratch after the frame). The full-size
# R2R/RxR step text is about 60 to 200 tokens plus about 12 candidate tokens.
SCRATCH_BUCKETS = (64, 128, 192, 256, 384, 512, 768, 1024)


def bucket_length(n: int, buckets: tuple[int, ...] = SCRATCH_BUCKETS) -> int:
    """The smallest bucket >= ``n`` (beyond the largest: the next multiple of 512)."""
    if n < 0:
        raise ValueError(f"length must be >= 0, got {n}")
    for b in buckets:
        if n <= b:
            return b
    return -(-n // 512) * 512


class StaticViT:
    """The Qwen vision tower (+ ``visual.merger``) on one image of grid ``grid_thw``.

    ``pixels`` (input, ``[patches, channels * temporal * patch * patch]`` in the tower's dtype)
    and ``out`` (``[tokens_per_image, hidden]``) are static. Same result as
    :meth:`JanusVLNModel.encode_images` (tested): the per-call host work of transformers'
    ``Qwen2_5_VisionTransformerPretrainedModel.forward`` is done once here with the tower's own
    rotary table and window plan (:func:`janus_core.compat.vision_rope_and_windows`), and the
    blocks run unchanged. Needs
    the packed window attention (:mod:`janus_core.vision_attention`; any Qwen attention but
    ``flash_attention_2``).
    """

    def __init__(self, model: JanusVLNModel, grid_thw: tuple[int, int, int]):
        visual = model.qwen.model.visual
        if not all(isinstance(b.attn, PackedWindowVisionAttention) for b in visual.blocks):
            raise ValueError("the fixed-shape ViT needs the packed window attention (Qwen "
                             "attn_implementation 'sdpa' or 'eager', not 'flash_attention_2')")
        device = model.device
        self.visual = visual
        self.grid_thw = tuple(int(v) for v in grid_thw)
        grid = torch.tensor([self.grid_thw])
        t, h, w = self.grid_thw
        unit = visual.spatial_merge_unit
        seq = t * h * w
        cos, sin, window_index, cu_window = vision_rope_and_windows(visual, grid)
        cu_window = torch.unique_consecutive(
            torch.tensor(cu_window, device=device, dtype=torch.int32))
        cu_full = torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0]).cumsum(
            dim=0, dtype=torch.int32)
        self.cu_full = F.pad(cu_full, (1, 0), value=0).to(device)
        self.cu_window = cu_window
        self.window_index = window_index.to(device)
        self.reverse_index = torch.argsort(self.window_index)
        self.position_embeddings = tuple(  # in the window order, as the tower's forward
            table.to(device).reshape(seq // unit, unit, -1)[self.window_index].reshape(seq, -1)
            for table in (cos, sin))
        self.full_blocks = set(visual.fullatt_block_indexes)
        self.plans = []  # pinned: the plans' tensors must outlive every replay
        for plans in {id(b.attn.plans): b.attn.plans for b in visual.blocks}.values():
            self.plans += [plans.pin(self.cu_full, device), plans.pin(self.cu_window, device)]
        patch_dim = visual.patch_embed.in_channels * visual.patch_embed.temporal_patch_size * (
            visual.patch_embed.patch_size ** 2)
        self.pixels = torch.zeros((seq, patch_dim), device=device, dtype=visual.dtype)
        self.out = torch.zeros((seq // unit, model.cfg.qwen.hidden_size), device=device,
                               dtype=model.dtype)

    def load(self, pixel_values: Tensor) -> None:
        """Copy one image's ``pixel_values`` (from ``processor.qwen_inputs``) into ``pixels``."""
        if tuple(pixel_values.shape) != tuple(self.pixels.shape):
            raise ValueError(f"pixel_values must be {tuple(self.pixels.shape)}, "
                             f"got {tuple(pixel_values.shape)}")
        self.pixels.copy_(pixel_values)

    @torch.no_grad()
    def run(self) -> None:
        """The tower on ``pixels`` -> ``out`` (capturable)."""
        visual = self.visual
        hs = visual.patch_embed(self.pixels)
        seq, unit = hs.shape[0], visual.spatial_merge_unit
        hs = hs.reshape(seq // unit, unit, -1)[self.window_index].reshape(seq, -1)
        for i, block in enumerate(visual.blocks):
            cu = self.cu_full if i in self.full_blocks else self.cu_window
            hs = block(hs, cu_seqlens=cu, position_embeddings=self.position_embeddings)
        self.out.copy_(visual.merger(hs)[self.reverse_index])


class StaticVGGTStep:
    """The lean VGGT step on ``frame`` (input ``[3, H, W]`` float32 in [0, 1]) -> ``out``.

    ``out`` is the merger output ``[tokens_per_image, hidden]``. The new frame's K/V go to the
    cache's working slot; ``run`` does not commit (the caller does, after ``mark_written`` when
    a graph replayed it). The first-frame special tokens come from ``cache.first_flag``.
    Capture one graph per value of ``cache.needs_mask`` (masked while the windows fill).
    """

    def __init__(self, model: JanusVLNModel, cache: StaticSpatialCache,
                 rope: tuple[Tensor, Tensor] | None):
        geo = model.geometry
        self.model, self.cache, self.rope = model, cache, rope
        self.frame = torch.zeros((3, geo.vggt_height, geo.vggt_width), device=model.device)
        self.out = torch.zeros((geo.tokens_per_image, model.cfg.qwen.hidden_size),
                               device=model.device, dtype=model.dtype)

    def load(self, frame: Tensor) -> None:
        """Copy one VGGT input frame (``processor.vggt_input``) into ``frame``."""
        if tuple(frame.shape) != tuple(self.frame.shape):
            raise ValueError(f"VGGT frame must be {tuple(self.frame.shape)}, "
                             f"got {tuple(frame.shape)}")
        self.frame.copy_(frame)

    @torch.no_grad()
    def run(self) -> None:
        """One VGGT step -> ``out`` (capturable)."""
        embeds = lean_vggt_embeds(self.model, self.frame, self.cache, self.rope,
                                  first_is_reference=self.cache.first_flag, commit=False,
                                  cache_casts=False)
        self.out.copy_(embeds)


class StaticLLMStep:
    """Fusion, one LLM forward of a padded step on the static semantic cache, the scores.

    Inputs: ``vit`` and ``vggt`` (the encoders' static outputs; ``vggt`` None without a VGGT
    branch), the layout's text embeddings (``set_layout``, per episode) and the step's
    positions (``set_positions``, per step). Outputs: ``fused`` (the frame's fused visual
    embeddings, ``[tokens_per_image, hidden]``) and ``scores`` (float32 ``[4]``, the sums of
    candidate token log-probabilities). Rows of the step: ``<|vision_start|>``, the frame's
    visual tokens, ``<|vision_end|>``, the step text, the candidates' fed tokens, then zero
    padding up to ``cache.step_tokens``; padding rows see only themselves and nobody sees them.
    """

    def __init__(self, model: JanusVLNModel, cache: StaticSemanticCache, attention: str,
                 vit: Tensor, vggt: Tensor | None):
        self.model, self.cache, self.attention = model, cache, attention
        self.vit, self.vggt, self.lam = vit, vggt, model.lam
        self.text_model = model.qwen.model.language_model
        self.fused = torch.zeros_like(vit)
        self.scores = torch.zeros(len(Action), device=model.device, dtype=torch.float32)
        self._generation = -1
        self._rows = 0

    def _allocate(self, rows: int, score_len: int) -> None:
        device, hidden = self.model.device, self.model.cfg.qwen.hidden_size
        self._embeds = torch.zeros((rows, hidden), device=device, dtype=self.model.dtype)
        self._positions = torch.zeros((3, rows), device=device, dtype=torch.long)
        self._base_positions = torch.zeros((3, rows), device=device, dtype=torch.long)
        self._cache_position = torch.arange(rows, device=device)
        self.score_rows = torch.zeros(score_len, device=device, dtype=torch.long)
        self.score_targets = torch.zeros(score_len, device=device, dtype=torch.long)
        self.score_candidate = torch.zeros(score_len, device=device, dtype=torch.long)
        self._generation, self._rows = self.cache.generation, rows

    def set_layout(self, layout, step_embeds: Tensor) -> None:
        """Per episode: the step's token embeddings, positions and score indices.

        Call after the cache's ``set_step_structure``; ``step_embeds`` is
        ``[layout.step_len, hidden]`` (the embeddings of ``layout.step_ids()``). Reallocates
        (invalidating captured graphs) only when the cache did or the number of scored tokens
        changed.
        """
        n, real = self.cache.step_tokens, layout.step_len
        rows = self.cache.frame_tokens + self.cache._scratch_capacity
        score_len = layout.score_rows.numel()
        if (self._generation != self.cache.generation or self._rows != rows
                or self.score_rows.numel() != score_len):
            self._allocate(rows, score_len)
        if real > n:
            raise ValueError(f"the step has {real} tokens but the cache steps {n}")
        self.embeds = self._embeds[:n]
        self.positions = self._positions[:, :n]
        self.cache_position = self._cache_position[:n]
        self.embeds.zero_()
        self.embeds[:real] = step_embeds
        base = self._base_positions[:, :n]
        base[:, :real] = layout.step_positions
        base[:, real:] = layout.step_positions[:, -1:]
        self.score_rows.copy_(layout.score_rows)
        self.score_targets.copy_(layout.score_targets)
        self.score_candidate.copy_(layout.score_candidate)

    @property
    def generation(self) -> int:
        """Buffer generation: graphs captured on an older one are stale."""
        return self._generation

    def set_positions(self, start: int) -> None:
        """The step's mRoPE positions: the layout's, shifted to start at ``start``."""
        n = self.cache.step_tokens
        torch.add(self._base_positions[:, :n], start, out=self.positions)

    @torch.no_grad()
    def run(self) -> None:
        """Fuse, LLM forward, scores (capturable)."""
        fused = self.vit if self.vggt is None else (
            self.vit + self.lam * self.vggt.to(self.vit.dtype))
        self.fused.copy_(fused)
        self.embeds[1 : 1 + fused.shape[0]].copy_(fused)
        hidden = decoder_forward(self.text_model, self.embeds, self.positions,
                                 self.cache.step_mask(), self.cache, self.cache_position,
                                 self.attention)
        logits = self.model.qwen.lm_head(hidden[self.score_rows])
        logp = logits.float().log_softmax(-1)
        token_logp = logp.gather(1, self.score_targets[:, None])[:, 0]
        self.scores.zero_()
        self.scores.index_add_(0, self.score_candidate, token_logp)


def padded_structure(allowed: Tensor, n: int) -> Tensor:
    """Bool ``[n, n]``: ``allowed`` top-left, padding rows see only themselves."""
    real = allowed.shape[0]
    if real > n:
        raise ValueError(f"cannot pad {real} step tokens to {n}")
    out = torch.zeros((n, n), dtype=torch.bool, device=allowed.device)
    out[:real, :real] = allowed
    pad = torch.arange(real, n, device=allowed.device)
    out[pad, pad] = True
    return out
