r"""Many episodes through one model in lockstep: the reference policy's step, batched.

:class:`LockstepPolicy` drives ``B`` episodes that start together and advance one step at a time,
as ``B`` :class:`~janus_core.policy.JanusVLNPolicy` objects would, with one model call per stage
for all of them: VGGT on the ``B`` new frames against a spatial cache of batch ``B`` (lockstep is
what lets the rows share the cache's timeline), the ViT on the ``B`` new frames only (a frame's
ViT tokens never change, so they are kept per episode), the fusion, the evaluation prompt of each
episode, and greedy decoding. Decoding re-runs the (short) padded batch once per generated token
instead of keeping a KV cache, which is exact and simple. DAgger rollouts (:mod:`training.recipe`)
use it to keep the GPU busy; the evaluation uses the real policy.

An episode that has ended keeps a row (fed its last frame) until the whole wave ends; callers
ignore its actions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from janus_core.actions import Action
from janus_core.compat import cache_arguments, output_cache
from janus_core.model import JanusVLNModel
from janus_core.processor import JanusProcessor, sample_history
from training.fastpath import (
    FrameEncoder,
    PromptBank,
    autocast_for,
    build_llm_batch,
    frames_to_images,
    llm_hidden,
    merge_vggt,
    qwen_patches,
    vggt_step_features,
)

log = logging.getLogger(__name__)


class LockstepPolicy:
    """``B`` episodes in lockstep through ``model`` (see the module docstring).

    ``reset(instructions)`` starts a wave (``B = len(instructions)``); ``act(frames)`` takes the
    ``B`` current frames, already resized by ``processor.preprocess_frame``, and returns one
    action per row. ``max_steps``: the policy's forced STOP (``cfg.max_steps``), as the reference
    policy applies it.
    """

    def __init__(self, model: JanusVLNModel, processor: JanusProcessor, kv_cache: bool = True):
        self.model = model.eval()
        self.processor = processor
        self.cfg = model.cfg
        self.prompts = PromptBank(model, processor)
        self.encoder = FrameEncoder(model)
        self.kv_cache = kv_cache
        eos = processor.tokenizer.eos_token_id
        self.eos = {int(eos)} if eos is not None else set()
        self.instructions: list[str] = []
        self.step = 0
        self.cache = None
        self._vit: list[torch.Tensor] = []  # per step: [B, tokens, hidden]
        self.last_tokens: list[list[int]] = []

    @property
    def batch_size(self) -> int:
        """Rows of the current wave."""
        return len(self.instructions)

    def reset(self, instructions: Sequence[str]) -> None:
        """Start a wave of ``len(instructions)`` episodes."""
        if not instructions:
            raise ValueError("a wave needs at least one episode")
        self.instructions = [str(i) for i in instructions]
        self.step = 0
        self._vit = []
        self.cache = (self.model.new_spatial_cache(batch_size=len(instructions))
                      if self.model.vggt is not None else None)

    @torch.no_grad()
    def act(self, frames: np.ndarray | Sequence[np.ndarray],
            active: Sequence[bool] | None = None) -> list[Action]:
        """One step for every row: ``frames`` ``[B, H, W, 3]`` uint8 (resized); actions per row.

        ``active``: rows whose episode is still running; others get STOP without decoding.
        """
        model, geo, cfg = self.model, self.model.geometry, self.cfg
        B = self.batch_size
        frames_t = torch.from_numpy(np.stack([np.asarray(f) for f in frames])).to(model.device)
        if frames_t.shape != (B, geo.vggt_height, geo.vggt_width, 3):
            raise ValueError(f"expected {B} frames of {geo.vggt_width}x{geo.vggt_height}, got "
                             f"{tuple(frames_t.shape)}")
        active = [True] * B if active is None else list(active)
        t = self.step
        images = frames_to_images(frames_t)
        hidden_size = cfg.qwen.hidden_size
        with autocast_for(model):
            vggt = None
            if model.vggt is not None:
                vggt = merge_vggt(model, vggt_step_features(model, images, self.cache))
            pixel_values, _ = qwen_patches(images, geo, cfg.qwen.temporal_patch_size)
            vit = self.encoder(pixel_values, B)
        self._vit.append(vit)
        self.step += 1
        idx = sample_history(t, cfg.memory.num_history)
        rows = [b for b in range(B) if active[b]]
        actions = [Action.STOP] * B
        self.last_tokens = [[] for _ in range(B)]
        if not rows:
            return actions
        history = torch.stack([self._vit[i] for i in idx], dim=1)  # [B, n, tok, hidden]
        if vggt is not None:
            history = history + model.lam * vggt[:, None].to(history.dtype)
        prompts = [self.prompts.get(self.instructions[b], len(idx)) for b in rows]
        image_rows = history[rows].reshape(-1, hidden_size)
        decode = self._decode_cached if self.kv_cache else self._decode_recompute
        generated = decode(prompts, image_rows, len(idx) * geo.tokens_per_image)
        for i, b in enumerate(rows):
            text = self.processor.decode(generated[i])
            actions[b], _ = self.processor.parse(text, t)
            self.last_tokens[b] = generated[i]
        return actions

    def _decode_recompute(self, prompts: list, image_rows: torch.Tensor,
                          per_row: int) -> list[list[int]]:
        """Greedy decoding by re-running the padded batch for every new token (no KV cache)."""
        model, cfg = self.model, self.cfg
        generated: list[list[int]] = [[] for _ in prompts]
        live = list(range(len(prompts)))
        for _ in range(cfg.max_new_tokens):
            batch = build_llm_batch([prompts[i] for i in live], [generated[i] for i in live],
                                    cfg.qwen.pad_token_id, model.device)
            rows_live = torch.cat([image_rows[i * per_row : (i + 1) * per_row] for i in live])
            with autocast_for(model):
                hidden = llm_hidden(model, batch, rows_live)
                last = hidden[torch.arange(len(live), device=model.device), batch.lengths - 1]
                next_ids = model.qwen.lm_head(last).float().argmax(-1).tolist()
            still = []
            for i, tok in zip(live, next_ids):
                generated[i].append(int(tok))
                if int(tok) not in self.eos:
                    still.append(i)
            live = still
            if not live:
                break
        return generated

    def _decode_cached(self, prompts: list, image_rows: torch.Tensor,
                       per_row: int) -> list[list[int]]:
        """Greedy decoding with the decoder's KV cache over the right-padded batch.

        New tokens go after the padding in the cache; the attention mask hides the padding and
        each row's mRoPE position continues from its own prompt (as ``greedy_generate`` does).
        """
        model, cfg = self.model, self.cfg
        dev = model.device
        batch = build_llm_batch(prompts, [[] for _ in prompts], cfg.qwen.pad_token_id, dev)
        n, length = batch.ids.shape
        lm = model.qwen.model.language_model
        embed = model.qwen.get_input_embeddings()
        rows = torch.arange(n, device=dev)
        next_pos = torch.tensor([int(p.positions.max()) + 1 for p in prompts], device=dev)
        mask = batch.attention_mask
        generated: list[list[int]] = [[] for _ in prompts]
        finished = [False] * n
        with autocast_for(model):
            out = lm(inputs_embeds=model.embed(batch.ids, image_rows),
                     position_ids=batch.positions, attention_mask=mask, use_cache=True)
            hidden = out.last_hidden_state[rows, batch.lengths - 1]
            for k in range(cfg.max_new_tokens):
                tokens = model.qwen.lm_head(hidden).float().argmax(-1)
                for i, tok in enumerate(tokens.tolist()):
                    if not finished[i]:
                        generated[i].append(int(tok))
                        finished[i] = int(tok) in self.eos
                if all(finished) or k == cfg.max_new_tokens - 1:
                    break
                mask = torch.cat([mask, mask.new_ones((n, 1))], dim=1)
                pos = (next_pos + k).view(1, n, 1).expand(3, n, 1)
                out = lm(inputs_embeds=embed(tokens.view(n, 1)), position_ids=pos,
                         attention_mask=mask, use_cache=True,
                         **cache_arguments(output_cache(out),
                                           torch.tensor([length + k], device=dev)))
                hidden = out.last_hidden_state[:, -1]
        return generated


def policy_for(model: JanusVLNModel, processor: JanusProcessor) -> LockstepPolicy:
    """A :class:`LockstepPolicy` on ``model`` (kept for symmetry with ``build_policy``)."""
    if processor.cfg.mode != "reference":
        log.warning("lockstep rollouts follow the reference loop; cfg.mode is %r",
                    processor.cfg.mode)
    return LockstepPolicy(model, processor)
