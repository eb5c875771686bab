"""One SDPA call for all of Qwen2.5-VL's vision attention windows, instead of one per window.

transformers' Qwen2.5-VL vision tower attends within windows (``cu_seqlens``). With
``flash_attention_2`` that is one variable-length kernel; with ``sdpa`` or ``eager`` transformers
loops in Python over every window (about 30 per 644x476 image and block, so ~270 calls per block
for the release's 9 images), which costs hundreds of milliseconds per step on a GPU. The module
here packs the windows into one padded batch with a key-padding mask and runs a single
``scaled_dot_product_attention``: the same result (tested against the stock module) without
flash-attn. Parameters (``qkv``, ``proj``) are the stock module's own, so checkpoints are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen_modeling


class PackedWindowVisionAttention(nn.Module):
    """Drop-in for ``Qwen2_5_VLVisionAttention`` that batches all windows into one SDPA call."""

    def __init__(self, stock: nn.Module):
        super().__init__()
        self.num_heads = stock.num_heads
        self.head_dim = stock.head_dim
        self.scaling = stock.scaling
        self.qkv = stock.qkv
        self.proj = stock.proj

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
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        chunks, max_len = lengths.numel(), int(lengths.max())
        chunk_of = torch.repeat_interleave(torch.arange(chunks, device=q.device), lengths)
        offset = torch.arange(seq, device=q.device) - cu_seqlens[:-1].to(q.device)[chunk_of]

        def pack(x: torch.Tensor) -> torch.Tensor:  # [seq, heads, d] -> [chunks, heads, len, d]
            packed = x.new_zeros(chunks, max_len, self.num_heads, x.shape[-1])
            packed[chunk_of, offset] = x
            return packed.transpose(1, 2)

        valid = torch.arange(max_len, device=q.device)[None, :] < lengths.to(q.device)[:, None]
        out = F.scaled_dot_product_attention(
            pack(q), pack(k), pack(v), attn_mask=valid[:, None, None, :], scale=self.scaling
        )
        out = out.transpose(1, 2)[chunk_of, offset]  # back to [seq, heads, d]
        return self.proj(out.reshape(seq, -1))


def pack_vision_attention(visual: nn.Module) -> int:
    """Swap each vision block's attention for PackedWindowVisionAttention; return the count."""
    swapped = 0
    for block in visual.blocks:
        if not isinstance(block.attn, PackedWindowVisionAttention):
            block.attn = PackedWindowVisionAttention(block.attn)
            swapped += 1
    return swapped
