r"""Trajectory-batched model passes: the reference policy's per-step computation, many at once.

:class:`janus_core.policy.JanusVLNPolicy` (reference mode) does, at step ``t`` of an episode:
VGGT on frame ``t`` against the episode's spatial cache (first ``initial`` + last ``recent``
frames), the Qwen ViT on the sampled frames ``sample_history(t, num_history)``, the fusion
``vit + lam * merger(vggt_t)`` on every image, the evaluation prompt, greedy decoding. This module
computes exactly that for every step of whole trajectories at once, which is what makes training
a small JanusVLN from scratch take minutes instead of hours:

- **VGGT, causally with the cache's window, with gradients.** Streaming frames ``0..T-1`` one by
  one through a :class:`~janus_core.memory.SpatialCache` equals one pass over all ``T`` frames in
  which frame ``i``'s global-attention queries see frame ``j`` iff ``j <= i`` and
  (``j < initial`` or ``j >= i - recent``): the frames the cache holds at step ``i``, plus ``i``.
  :func:`causal_vggt_features` runs that pass (query frames in chunks, each against the key
  frames its window needs), so the features used at every step come out of one forward, exactly
  as the policy computes them at inference, and VGGT can be trained (the cache is inference-only).
  The release instead trains on the sampled frames streamed through a fresh cache, which does not
  match its own inference loop; with pretrained, frozen VGGT that matters less.
- **ViT once per frame.** The ViT encodes each image on its own, so every frame of a trajectory is
  encoded once and its tokens are gathered for every step that shows it.
- **Prompts.** Evaluation-style prompts (``cfg.prompt_style == "eval"``, the policy's default) are
  ``prefix(n) + suffix(instruction)``: everything up to the last ``<|vision_end|>`` depends only on
  the number of images. :class:`PromptBank` tokenises each instruction once and takes the mRoPE
  positions of the prefix from transformers' ``get_rope_index`` once per image count; the text
  after it is numbered on from there, as ``get_rope_index`` numbers text.
- **LLM.** :func:`llm_hidden` runs the stock Qwen2.5-VL decoder over a right-padded batch of
  samples with those positions; :func:`answer_logits` applies ``lm_head`` only where a token is
  predicted.

Tests (``test/training/test_fastpath.py``) check each piece against the policy's own path.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from janus_core.compat import vision_rope_and_windows
from janus_core.memory import SpatialCache
from janus_core.model import JanusVLNModel
from janus_core.processor import (
    CLIP_MEAN,
    CLIP_STD,
    VISION_END,
    Geometry,
    JanusProcessor,
)
from janus_core.vggt import apply_rope_2d


class FastPathError(ValueError):
    """The model or inputs cannot use the trajectory-batched path; the message says why."""


def autocast_for(model: JanusVLNModel) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on the model's device unless the model is float32 (then nothing)."""
    if model.dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=model.dtype)


# ---- pixels --------------------------------------------------------------------------------------


def frames_to_images(frames: Tensor) -> Tensor:
    """Resized frames ``[N, H, W, 3]`` uint8 -> ``[N, 3, H, W]`` float32 in [0, 1] (ToTensor)."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise FastPathError(f"frames must be [N, H, W, 3] uint8, got {tuple(frames.shape)} "
                            f"{frames.dtype}")
    return frames.permute(0, 3, 1, 2).to(torch.float32).div_(255)


def qwen_patches(images: Tensor, geometry: Geometry,
                 temporal_patch_size: int = 2) -> tuple[Tensor, Tensor]:
    """``[N, 3, H, W]`` VGGT-size images -> Qwen ``(pixel_values, image_grid_thw)``, batched.

    The same crop, CLIP normalisation and patch order as
    :func:`janus_core.processor.qwen_pixel_values` on each image, in one tensor op.
    """
    p, m = geometry.patch_size, geometry.merge_size
    x = images[..., : geometry.qwen_height, : geometry.qwen_width]
    n, _, h, w = x.shape
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    gh, gw = h // p, w // p
    x = x.unsqueeze(1).expand(-1, temporal_patch_size, -1, -1, -1)
    x = x.reshape(n, temporal_patch_size, 3, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = x.reshape(n * gh * gw, 3 * temporal_patch_size * p * p)
    grid = torch.tensor([[1, gh, gw]], dtype=torch.long, device=x.device).expand(n, -1)
    return pixel_values, grid.contiguous()


def regroup_batched(patch_tokens: Tensor, geometry: Geometry) -> Tensor:
    """``[..., Hv * Wv, C]`` VGGT patch tokens -> ``[..., tokens_per_image, merge**2 * C]``.

    :func:`janus_core.processor.regroup_vggt_features` over leading batch dimensions.
    """
    hv, wv = geometry.vggt_grid
    hm, wm = geometry.merged_grid
    m = geometry.merge_size
    lead, c = patch_tokens.shape[:-2], patch_tokens.shape[-1]
    x = patch_tokens.reshape(-1, hv, wv, c)[:, : hm * m, : wm * m]
    x = x.reshape(-1, hm, m, wm, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(*lead, hm * wm, m * m * c)


# ---- ViT ----------------------------------------------------------------------------------------


class FrameEncoder:
    """The Qwen ViT over ``n`` images of the model's one geometry, with its plan cached.

    transformers' vision forward builds the rotary table and the window order with a Python loop
    over the images (several device syncs per image when ``grid_thw`` is on the GPU). All frames
    here share one grid, so the plan for ``n`` images is one image's plan tiled, built once per
    ``n``; the blocks, merger and reordering are the stock modules (same result as
    :meth:`janus_core.model.JanusVLNModel.encode_images`, tested).
    """

    def __init__(self, model: JanusVLNModel, keep: int = 8):
        self.model = model
        self.visual = model.qwen.model.visual
        self.grid = model.geometry.qwen_grid
        self.keep = keep
        self._plans: dict[tuple[int, str], tuple] = {}

    def _plan(self, n: int, device: torch.device) -> tuple:
        key = (n, str(device))
        if key in self._plans:
            return self._plans[key]
        v = self.visual
        gh, gw = self.grid
        unit = v.spatial_merge_unit
        per_image = gh * gw  # patches
        grid1 = torch.tensor([[1, gh, gw]])
        cos1, sin1, win1, cu1 = vision_rope_and_windows(v, grid1)  # [patches, head_dim]
        merged = per_image // unit
        window_index = torch.cat([win1.to(device) + k * merged for k in range(n)])
        cu = [0] + [c + k * per_image for k in range(n) for c in cu1[1:]]
        cu_window = torch.unique_consecutive(torch.tensor(cu, dtype=torch.int32, device=device))
        cu_full = torch.arange(0, n + 1, dtype=torch.int32, device=device) * per_image

        def windowed(table: Tensor) -> Tensor:  # tile over n images, then the window order
            table = table.to(device).repeat(n, 1).reshape(n * merged, unit, -1)
            return table[window_index].reshape(n * per_image, -1)

        plan = (window_index, cu_window, cu_full, (windowed(cos1), windowed(sin1)),
                torch.argsort(window_index))
        if len(self._plans) >= self.keep:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan
        return plan

    def __call__(self, pixel_values: Tensor, n: int) -> Tensor:
        """``n`` images' Qwen patches -> ``[n, tokens_per_image, hidden]``."""
        v = self.visual
        window_index, cu_window, cu_full, position_embeddings, reverse = self._plan(
            n, pixel_values.device)
        hs = v.patch_embed(pixel_values.to(self.model.device))
        seq = hs.shape[0]
        unit = v.spatial_merge_unit
        hs = hs.reshape(seq // unit, unit, -1)[window_index].reshape(seq, -1)
        for i, block in enumerate(v.blocks):
            cu = cu_full if i in v.fullatt_block_indexes else cu_window
            hs = block(hs, cu_seqlens=cu, position_embeddings=position_embeddings)
        hs = v.merger(hs)[reverse]
        return hs.view(n, -1, hs.shape[-1])


# ---- VGGT ----------------------------------------------------------------------------------------


def window_mask(num_frames: int, initial: int, recent: int,
                device: torch.device | None = None) -> Tensor:
    """``[T, T]`` bool: query frame ``i`` sees key frame ``j`` (the cache's window, plus ``i``)."""
    i = torch.arange(num_frames, device=device)[:, None]
    j = torch.arange(num_frames, device=device)[None, :]
    return (j <= i) & ((j < initial) | (j >= i - recent))


def _feature_layer(model: JanusVLNModel) -> int:
    depth = model.cfg.vggt.depth
    return model.cfg.vggt.feature_layer % depth


def causal_vggt_features(model: JanusVLNModel, images: Tensor, chunk: int = 16) -> Tensor:
    """VGGT fusion features of every frame, as the streaming policy computes them.

    ``images``: ``[B, T, 3, H, W]`` in [0, 1] (trajectories padded at the end to a common ``T``;
    padded frames come after every real one, so no real frame attends to them). Returns
    ``[B, T, tokens_per_image, 4 * 2C]`` (layer ``cfg.vggt.feature_layer``, regrouped), with
    gradients when enabled. Only the blocks up to the feature layer run (the later ones do not
    change that layer's output).
    """
    if model.vggt is None:
        raise FastPathError("this model has no VGGT branch (cfg.use_vggt is False)")
    agg = model.vggt.aggregator
    geo = model.geometry
    if images.ndim != 5 or tuple(images.shape[2:]) != (3, geo.vggt_height, geo.vggt_width):
        raise FastPathError(f"images must be [B, T, 3, {geo.vggt_height}, {geo.vggt_width}], got "
                            f"{tuple(images.shape)}")
    B, T = images.shape[:2]
    mem = model.cfg.memory
    frame_ok = window_mask(T, mem.spatial_initial, mem.spatial_recent, images.device)
    x = agg.embed_frames(images, first_is_reference=True)  # [B*T, P, C]
    P, C = x.shape[1:]
    cos, sin = agg.rope_tables(geo.vggt_height, geo.vggt_width, images.device)
    last = _feature_layer(model)
    out = None
    for i in range(last + 1):
        x = agg.frame_blocks[i](x, rope=(cos, sin))
        frame_out = x.view(B, T, P, C)
        x = _masked_global_block(agg.global_blocks[i], x.view(B, T * P, C), (cos, sin), frame_ok,
                                 T, P, chunk, mem.spatial_initial, mem.spatial_recent)
        if i == last:
            out = torch.cat([frame_out, x.view(B, T, P, C)], dim=-1)
        x = x.view(B * T, P, C)
    patches = out[:, :, agg.patch_start_idx:]
    return regroup_batched(patches, geo)


def _masked_global_block(block, x: Tensor, rope: tuple[Tensor, Tensor], frame_ok: Tensor, T: int,
                         P: int, chunk: int, initial: int, recent: int) -> Tensor:
    """One global block over ``[B, T*P, C]`` with the cache-window mask between frames."""
    attn = block.attn
    B, N, C = x.shape
    h = block.norm1(x)
    qkv = attn.qkv(h).view(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # [B, heads, T*P, hd]
    q, k = attn.q_norm(q), attn.k_norm(k)
    cos, sin = rope[0].repeat(T, 1), rope[1].repeat(T, 1)
    q, k = apply_rope_2d(q, cos, sin), apply_rope_2d(k, cos, sin)
    outs = []
    for c0 in range(0, T, chunk):
        c1 = min(T, c0 + chunk)
        lo = max(initial, c0 - recent)
        if lo <= initial:
            key_frames = torch.arange(0, c1, device=x.device)
            ks, vs = k[:, :, : c1 * P], v[:, :, : c1 * P]
        else:  # the initial frames, then the recent window of this chunk
            key_frames = torch.cat([torch.arange(0, initial, device=x.device),
                                    torch.arange(lo, c1, device=x.device)])
            ks = torch.cat([k[:, :, : initial * P], k[:, :, lo * P : c1 * P]], dim=2)
            vs = torch.cat([v[:, :, : initial * P], v[:, :, lo * P : c1 * P]], dim=2)
        ok = frame_ok[c0:c1][:, key_frames]
        mask = ok.repeat_interleave(P, 0).repeat_interleave(P, 1)
        qs = q[:, :, c0 * P : c1 * P]
        outs.append(F.scaled_dot_product_attention(qs, ks.to(qs.dtype), vs.to(qs.dtype),
                                                   attn_mask=mask))
    a = torch.cat(outs, dim=2).transpose(1, 2).reshape(B, N, C)
    x = x + block.ls1(attn.proj(a))
    return x + block.ls2(block.mlp(block.norm2(x)))


@torch.no_grad()
def vggt_step_features(model: JanusVLNModel, images: Tensor, cache: SpatialCache) -> Tensor:
    """One streaming step for a batch of episodes in lockstep: ``[B, 3, H, W]`` -> features.

    The batched form of :meth:`janus_core.model.JanusVLNModel.vggt_features` with a cache of
    ``batch_size`` B (all rows on the same step). Returns ``[B, tokens_per_image, 4 * 2C]``.
    """
    if model.vggt is None:
        raise FastPathError("this model has no VGGT branch (cfg.use_vggt is False)")
    frames = images.to(model.device, torch.float32)[:, None]
    with autocast_for(model):
        outputs, start = model.vggt.aggregator(frames, cache)
        tokens = outputs[model.cfg.vggt.feature_layer][:, 0, start:]
    return regroup_batched(tokens, model.geometry)


def merge_vggt(model: JanusVLNModel, features: Tensor) -> Tensor:
    """The VGGT merger over ``[..., tokens, 4 * 2C]`` -> ``[..., tokens, hidden]``."""
    lead = features.shape[:-1]
    out = model.merger(features.reshape(-1, features.shape[-1]).to(model.dtype))
    return out.reshape(*lead, out.shape[-1])


# ---- prompts -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Prompt:
    """Token ids and mRoPE positions (``[3, L]``) of one evaluation prompt (CPU tensors)."""

    ids: Tensor
    positions: Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class PromptBank:
    """Evaluation prompts ``prefix(n_images) + suffix(instruction)``, built once and reused.

    ``get(instruction, n)`` returns the same ids as ``processor.prompt_ids(instruction, n)`` and
    the positions ``get_rope_index`` gives them; :meth:`check` compares both on an example.
    """

    def __init__(self, model: JanusVLNModel, processor: JanusProcessor):
        if processor.cfg.prompt_style != "eval":
            raise FastPathError("the trajectory-batched path uses the evaluation prompt; "
                                f"prompt_style is {processor.cfg.prompt_style!r}")
        self.model = model
        self.processor = processor
        self.vision_end = processor.tokenizer.convert_tokens_to_ids(VISION_END)
        self._prefix: dict[int, tuple[Tensor, Tensor]] = {}
        self._suffix: dict[str, Tensor] = {}

    def _split(self, ids: Tensor) -> int:
        ends = (ids == self.vision_end).nonzero()
        if not len(ends):
            raise FastPathError("prompt has no <|vision_end|> token")
        return int(ends[-1]) + 1

    def prefix(self, n: int) -> tuple[Tensor, Tensor]:
        """Ids and positions of everything up to the last image's ``<|vision_end|>``."""
        if n not in self._prefix:
            ids = self.processor.prompt_ids("go", n)[0]
            cut = self._split(ids)
            grid = torch.tensor([self.model.geometry.grid_thw] * n, dtype=torch.long)
            pos, _ = self.model.rope_positions(ids[None], grid)
            self._prefix[n] = (ids[:cut].clone(), pos[:, 0, :cut].to("cpu").clone())
        return self._prefix[n]

    def suffix(self, instruction: str) -> Tensor:
        """Ids of the text after the images (task text, end of turn, assistant header)."""
        if instruction not in self._suffix:
            ids = self.processor.prompt_ids(instruction, 1)[0]
            cut = self._split(ids)
            if not torch.equal(ids[:cut], self.prefix(1)[0]):
                raise FastPathError("the prompt before the images depends on the instruction; "
                                    "the chat template is not the evaluation layout")
            self._suffix[instruction] = ids[cut:].clone()
        return self._suffix[instruction]

    def get(self, instruction: str, n: int) -> Prompt:
        """The prompt for ``instruction`` with ``n`` images."""
        ids, pos = self.prefix(n)
        tail = self.suffix(instruction)
        start = int(pos.max()) + 1
        text = torch.arange(start, start + len(tail), dtype=pos.dtype).expand(3, -1)
        return Prompt(torch.cat([ids, tail]), torch.cat([pos, text], dim=1))

    def check(self, instruction: str, n: int) -> None:
        """Raise unless :meth:`get` equals the processor's ids and transformers' positions."""
        prompt = self.get(instruction, n)
        ids = self.processor.prompt_ids(instruction, n)[0]
        grid = torch.tensor([self.model.geometry.grid_thw] * n, dtype=torch.long)
        pos, _ = self.model.rope_positions(ids[None], grid)
        if not torch.equal(prompt.ids, ids) or not torch.equal(prompt.positions,
                                                               pos[:, 0].to("cpu")):
            raise FastPathError(f"prompt bank disagrees with the processor for n={n}")


# ---- LLM batches ---------------------------------------------------------------------------------


@dataclasses.dataclass
class LLMBatch:
    """A right-padded batch of prompt (+ answer) sequences, on the model's device.

    ``ids`` / ``attention_mask`` ``[S, L]``, ``positions`` ``[3, S, L]``; ``lengths`` the real
    length of each row.
    """

    ids: Tensor
    positions: Tensor
    attention_mask: Tensor
    lengths: Tensor


def build_llm_batch(prompts: Sequence[Prompt], answers: Sequence[Sequence[int]], pad_id: int,
                    device: torch.device) -> LLMBatch:
    """Rows ``prompt + answer`` (answer tokens numbered on as text), right-padded by ``pad_id``."""
    if len(prompts) != len(answers):
        raise FastPathError(f"{len(prompts)} prompts but {len(answers)} answers")
    lengths = [len(p) + len(a) for p, a in zip(prompts, answers)]
    S, L = len(prompts), max(lengths)
    ids = torch.full((S, L), pad_id, dtype=torch.long)
    pos = torch.ones((3, S, L), dtype=torch.long)
    mask = torch.zeros((S, L), dtype=torch.long)
    for s, (p, a) in enumerate(zip(prompts, answers)):
        n = len(p)
        ids[s, :n] = p.ids
        pos[:, s, :n] = p.positions
        if len(a):
            ids[s, n : n + len(a)] = torch.as_tensor(list(a), dtype=torch.long)
            start = int(p.positions.max()) + 1
            pos[:, s, n : n + len(a)] = torch.arange(start, start + len(a))
        mask[s, : lengths[s]] = 1
    return LLMBatch(ids.to(device), pos.to(device), mask.to(device),
                    torch.tensor(lengths, device=device))


def llm_hidden(model: JanusVLNModel, batch: LLMBatch, image_rows: Tensor | None) -> Tensor:
    """Last hidden states ``[S, L, hidden]`` of the stock decoder over ``batch``.

    ``image_rows`` fills the ``<|image_pad|>`` slots in row-major order (fused visual tokens).
    """
    embeds = model.embed(batch.ids, image_rows)
    out = model.qwen.model.language_model(
        inputs_embeds=embeds, position_ids=batch.positions, attention_mask=batch.attention_mask,
        use_cache=False,
    )
    return out.last_hidden_state


def answer_logits(model: JanusVLNModel, hidden: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``lm_head`` at positions ``(rows, cols)`` only: ``[len(rows), vocab]``."""
    return model.qwen.lm_head(hidden[rows, cols])


def history_indices(t: int, num_history: int) -> list[int]:
    """The frames the LLM sees at step ``t`` (:func:`janus_core.processor.sample_history`)."""
    from janus_core.processor import sample_history

    return sample_history(t, num_history)


def stack_frames(arrays: Sequence[np.ndarray]) -> Tensor:
    """Resized HxWx3 uint8 frames -> one ``[N, H, W, 3]`` uint8 tensor."""
    return torch.from_numpy(np.stack([np.ascontiguousarray(a) for a in arrays]))
