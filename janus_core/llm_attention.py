"""The LLM forward of a streaming step: attention kernels over a K/V cache, and the one call.

Streaming mode (:mod:`janus_core.streaming`) runs the stock transformers Qwen2.5-VL decoder on a
step's new tokens with an explicit additive mask and its own cache object
(:class:`janus_core.memory.SemanticCache` or
:class:`janus_core.static_memory.StaticSemanticCache`, which implement transformers' cache hook
``update(key, value, layer_idx, cache_kwargs)``). :func:`decoder_forward` is the only place that
calls the decoder with such a cache, so a transformers release with another cache or mask API is
adapted here. The attention functions are registered with transformers'
``AttentionInterface`` under :data:`GROUPED_ATTENTION` and :data:`REPEAT_ATTENTION`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface

from janus_core.compat import cache_arguments

log = logging.getLogger(__name__)

GROUPED_ATTENTION = "janus_grouped_sdpa"
REPEAT_ATTENTION = "janus_repeat_sdpa"


def grouped_sdpa_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """SDPA for grouped-query attention without copying K/V per query head.

    query ``[B, Hq, q, D]``, key/value ``[B, Hk, kv, D]`` (views of the cache buffer). Query
    head ``h`` uses K/V head ``h // (Hq / Hk)`` (transformers' ``repeat_kv`` convention); here
    the ``Hq / Hk`` query heads of a group become the head axis of a batch of ``B * Hk`` and the
    K/V head is broadcast to them (a stride-0 view), so the mask ``[1, 1, q, kv]`` broadcasts
    too. Returns ``([B, q, Hq, D], None)`` as transformers' attention functions do.
    """
    b, hq, lq, d = query.shape
    hk, lk = key.shape[1], key.shape[2]
    g = hq // hk
    q = query.reshape(b * hk, g, lq, d)
    k = key.reshape(b * hk, 1, lk, d).expand(-1, g, -1, -1)
    v = value.reshape(b * hk, 1, lk, d).expand(-1, g, -1, -1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=scaling)
    return out.reshape(b, hq, lq, d).transpose(1, 2), None  # torch 2.3 may return it strided


def repeat_sdpa_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """SDPA after repeating K/V per query head (a transient copy per layer, as transformers)."""
    g = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(g, dim=1), value.repeat_interleave(g, dim=1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                         scale=scaling)
    return out.transpose(1, 2), None


AttentionInterface.register(GROUPED_ATTENTION, grouped_sdpa_attention)
AttentionInterface.register(REPEAT_ATTENTION, repeat_sdpa_attention)

# On CUDA the LLM forward of a step runs with these SDPA kernels: the memory-efficient kernel
# (fused, takes an additive mask and, as probed below, stride-0 K/V heads), the math kernel only
# as a last resort (it materialises the attention weights). Flash takes no mask; cuDNN is left
# out because its stride requirements for the grouped layout are not probed.
CUDA_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def grouped_attention_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the fused masked SDPA kernel takes the grouped (stride-0 K/V) layout here.

    Always True off CUDA (the CPU kernels take any strides). On CUDA a small grouped call is
    tried with only the memory-efficient kernel enabled; checked once per policy.
    """
    if device.type != "cuda":
        return True
    q = torch.randn(1, 8, 16, 128, device=device, dtype=dtype)
    kv = torch.randn(1, 2, 40, 128, device=device, dtype=dtype)
    mask = torch.zeros(1, 1, 16, 48, device=device, dtype=dtype)[..., :40]
    try:
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            grouped_sdpa_attention(None, q, kv, kv, mask)
        torch.cuda.synchronize(device)
    except RuntimeError as err:
        log.warning("grouped SDPA layout not supported by the fused kernel (%s)", err)
        return False
    return True


@contextlib.contextmanager
def attention_implementation(text_model: torch.nn.Module, name: str) -> Iterator[None]:
    """Temporarily route the LLM's attention layers to ``name`` (restored afterwards).

    The model is shared with reference mode, which keeps its configured kernel.
    """
    config = text_model.config
    old = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """Bool ``[q, k]`` (True = may attend) -> float ``[q, k]``: 0 or the dtype's minimum."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def decoder_forward(
    text_model: torch.nn.Module,
    embeds: Tensor,
    positions: Tensor,
    mask: Tensor,
    cache,
    cache_position: Tensor,
    attention: str,
) -> Tensor:
    """One decoder forward of new tokens on top of ``cache``; final hidden states ``[n, H]``.

    ``embeds`` ``[n, H]``, ``positions`` ``[3, n]`` (mRoPE), ``mask`` additive
    ``[1, 1, n, keys]`` over the K/V that ``cache.update`` returns, ``cache_position`` ``[n]``.
    ``attention`` names the attention function (:data:`GROUPED_ATTENTION` or
    :data:`REPEAT_ATTENTION`). On CUDA SDPA is limited to :data:`CUDA_BACKENDS`. No host sync:
    the fixed-shape step captures this call in a CUDA graph.
    """
    kernels = (sdpa_kernel(CUDA_BACKENDS) if embeds.device.type == "cuda"
               else contextlib.nullcontext())
    with attention_implementation(text_model, attention), kernels:
        out = text_model(
            inputs_embeds=embeds[None], position_ids=positions[:, None, :],
            attention_mask={"full_attention": mask}, use_cache=True,
            **cache_arguments(cache, cache_position, own_cache=True),
        )
    return out.last_hidden_state[0]
