"""One SDPA call for all of Qwen2.5-VL's vision attention windows, instead of one per window.

transformers' Qwen2.5-VL vision tower attends within windows (``cu_seqlens``). With
``flash_attention_2`` that is one variable-length kernel; with ``sdpa`` or ``eager`` transformers
loops in Python over every window (about 30 per 644x476 image and block, so ~270 calls per block
for the release's 9 images), which costs hundreds of milliseconds per step on a GPU. The module
here packs the windows into one padded batch with a key-padding mask and runs a single
``scaled_dot_product_attention``: the same result (tested against the stock module) without
flash-attn. Parameters (``qkv``, ``proj``) are the stock module's own, so checkpoints are unchanged.

The packing plan (which token goes to which window slot) needs the window lengths on the host,
i.e. one GPU->CPU sync. All windowed blocks of one forward share one ``cu_seqlens`` tensor and
the full-attention blocks another, so the plan is built once per tensor and shared by every
block through a :class:`PackingPlans` cache (two syncs per forward instead of several per block).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen_modeling


@dataclasses.dataclass
class PackingPlan:
    """Where each token sits in the padded [chunks, max_len] batch, and which slots are real."""

    chunk_of: torch.Tensor  # [tokens] window index of each token
    offset: torch.Tensor  # [tokens] position of each token inside its window
    valid: torch.Tensor  # [chunks, 1, 1, max_len] key-padding mask for SDPA
    chunks: int
    max_len: int


class PackingPlans:
    """Packing plans keyed by the ``cu_seqlens`` tensor object they were built for.

    The tensors are held, so their ids stay unique; only the most recent few are kept.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._plans: dict[int, tuple[torch.Tensor, PackingPlan]] = {}
        self._pinned: dict[int, tuple[torch.Tensor, PackingPlan]] = {}

    def pin(self, cu_seqlens: torch.Tensor, device: torch.device) -> PackingPlan:
        """Build the plan for ``cu_seqlens`` now and keep it for good (never evicted).

        For a fixed-shape ViT forward that is captured in a CUDA graph: ``get`` then finds the
        plan without the host sync, and the plan's tensors stay alive for the graph's replays.
        """
        plan = self.get(cu_seqlens, device)
        self._pinned[id(cu_seqlens)] = (cu_seqlens, plan)
        return plan

    def get(self, cu_seqlens: torch.Tensor, device: torch.device) -> PackingPlan:
        """The plan for ``cu_seqlens`` (built on first use)."""
        hit = self._pinned.get(id(cu_seqlens)) or self._plans.get(id(cu_seqlens))
        if hit is not None and hit[0] is cu_seqlens:
            return hit[1]
        bounds = cu_seqlens.tolist()  # the one host sync for this tensor
        lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        chunks, max_len = len(lengths), max(lengths)
        lengths_t = torch.tensor(lengths, device=device)
        chunk_of = torch.repeat_interleave(torch.arange(chunks, device=device), lengths_t,
                                           output_size=bounds[-1] - bounds[0])
        starts = torch.tensor(bounds[:-1], device=device)
        offset = torch.arange(bounds[-1] - bounds[0], device=device) + bounds[0] - starts[chunk_of]
        valid = torch.arange(max_len, device=device)[None, :] < lengths_t[:, None]
        plan = PackingPlan(chunk_of, offset, valid[:, None, None, :], chunks, max_len)
        if len(self._plans) >= self.keep:
            self._plans.pop(next(iter(self._plans)))
        self._plans[id(cu_seqlens)] = (cu_seqlens, plan)
        return plan


class PackedWindowVisionAttention(nn.Module):
    """Drop-in for ``Qwen2_5_VLVisionAttention`` that batches all windows into one SDPA call."""

    def __init__(self, stock: nn.Module, plans: PackingPlans | None = None):
        super().__init__()
        self.num_heads = stock.num_heads
        self.head_dim = stock.head_dim
        self.scaling = stock.scaling
        self.qkv = stock.qkv
        self.proj = stock.proj
        self.plans = plans if plans is not None else PackingPlans()

    def forward(
        self,
        hidden_states: torch.Tensor,
        cu_seqlens: torch.Tensor,
        rotary_pos_emb: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Attend within each ``cu_seqlens`` chunk; ``hidden_states`` is [tokens, dim]."""
        seq = hidden_states.shape[0]
        q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3)
        cos, sin = position_embeddings
        q, k = qwen_modeling.apply_rotary_pos_emb_vision(q, k, cos, sin)
        plan = self.plans.get(cu_seqlens, q.device)

        def pack(x: torch.Tensor) -> torch.Tensor:  # [seq, heads, d] -> [chunks, heads, len, d]
            packed = x.new_zeros(plan.chunks, plan.max_len, self.num_heads, x.shape[-1])
            packed[plan.chunk_of, plan.offset] = x
            return packed.transpose(1, 2)

        out = F.scaled_dot_product_attention(
            pack(q), pack(k), pack(v), attn_mask=plan.valid, scale=self.scaling
        )
        out = out.transpose(1, 2)[plan.chunk_of, plan.offset]  # back to [seq, heads, d]
        return self.proj(out.reshape(seq, -1))


def pack_vision_attention(visual: nn.Module) -> int:
    """Swap each vision block's attention for PackedWindowVisionAttention; return the count."""
    plans = PackingPlans()
    swapped = 0
    for block in visual.blocks:
        if not isinstance(block.attn, PackedWindowVisionAttention):
            block.attn = PackedWindowVisionAttention(block.attn, plans)
            swapped += 1
    return swapped
