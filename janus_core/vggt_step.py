"""One streaming VGGT step, lean: the aggregator trunk stops at ``vggt.feature_layer``.

JanusVLN fuses the aggregator output of layer ``feature_layer`` (-2, the second-to-last); the
blocks after it feed neither that output nor any later frame's (their K/V only reach later
frames' blocks at the same depth or deeper). Streaming mode therefore runs the trunk up to the
feature layer and keeps spatial K/V for those blocks only (``streaming.lean_vggt``): the same
features in fewer blocks and with a smaller cache (tested against the full aggregator).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import Tensor

from janus_core.config import JanusConfig
from janus_core.memory import SpatialCache
from janus_core.model import JanusVLNModel
from janus_core.processor import regroup_vggt_features


def feature_depth(cfg: JanusConfig) -> int:
    """Trunk blocks (frame + global pairs) needed for ``vggt.feature_layer``: index + 1."""
    return cfg.vggt.feature_layer % cfg.vggt.depth + 1


def vggt_autocast(model: JanusVLNModel, cache_enabled: bool = True
                  ) -> contextlib.AbstractContextManager:
    """The release's bf16 autocast around VGGT (nothing in float32).

    ``cache_enabled=False`` inside CUDA graph capture (autocast's weight-cast cache must not
    hold tensors made during a capture).
    """
    if model.dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=model.dtype,
                          cache_enabled=cache_enabled)


def new_lean_spatial_cache(model: JanusVLNModel) -> SpatialCache:
    """A spatial cache for the blocks :func:`lean_vggt_embeds` runs (feature_layer + 1 of them)."""
    cfg = model.cfg
    tokens = model.geometry.vggt_tokens_per_frame(cfg.vggt.num_register_tokens)
    lean = dataclasses.replace(cfg.vggt, depth=feature_depth(cfg))
    return SpatialCache(lean, cfg.memory, tokens, device=model.device, dtype=model.dtype)


@torch.no_grad()
def lean_vggt_embeds(model: JanusVLNModel, frame: Tensor, cache: SpatialCache,
                     rope: tuple[Tensor, Tensor] | None = None,
                     first_is_reference: bool | Tensor | None = None,
                     commit: bool = True, cache_casts: bool = True) -> Tensor:
    """One streaming VGGT step that stops at ``feature_layer``; returns the merger output.

    Same result as :meth:`JanusVLNModel.encode_vggt` with a full cache (the blocks after the
    feature layer neither feed it nor feed any later frame's feature layer), in fewer blocks and
    with a smaller cache (from :func:`new_lean_spatial_cache`). ``frame``: ``[3, H, W]`` in
    [0, 1] at the VGGT size. Returns ``[tokens_per_image, hidden]`` in model dtype.

    ``first_is_reference``: default ``cache.frames_seen == 0``; the fixed-shape step passes the
    cache's device flag instead. ``commit=False`` leaves ``cache.commit()`` to the caller (a
    captured CUDA graph cannot run the cache's bookkeeping). ``cache_casts``: autocast's
    weight-cast cache (off inside a capture).
    """
    agg, geo = model.vggt.aggregator, model.geometry
    if tuple(frame.shape) != (3, geo.vggt_height, geo.vggt_width):
        raise ValueError(
            f"VGGT frame must be [3, {geo.vggt_height}, {geo.vggt_width}], got {tuple(frame.shape)}"
        )
    if cache.num_layers != feature_depth(model.cfg):
        raise ValueError(
            f"lean VGGT needs a cache of {feature_depth(model.cfg)} layers, got {cache.num_layers}"
        )
    if first_is_reference is None:
        first_is_reference = cache.frames_seen == 0
    images = frame.to(model.device, torch.float32)[None, None]
    with vggt_autocast(model, cache_enabled=cache_casts):
        x = agg.embed_frames(images, first_is_reference=first_is_reference)  # [1, P, C]
        if rope is None and agg.rope is not None:
            rope = agg.rope_tables(geo.vggt_height, geo.vggt_width, model.device)
        for i in range(cache.num_layers):
            frame_out = x = agg.frame_blocks[i](x, rope=rope)
            x = agg.global_blocks[i](x, rope=rope, cache=cache, layer=i)
        if commit:
            cache.commit()
        tokens = torch.cat([frame_out, x], dim=-1)[0, agg.patch_start_idx :]
    return model.merger(regroup_vggt_features(tokens, geo).to(model.dtype))
