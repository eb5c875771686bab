"""Every difference between the transformers versions we support, in one place.

``janus_core`` and ``training`` run on transformers 4.x (from :data:`MIN_TRANSFORMERS`) and 5.x.
The Qwen2.5-VL seams we use moved between releases; code elsewhere calls the helpers here and
never tests a version itself. Each helper detects the installed API by what it offers (a method,
a parameter name), not by its version number, so a 5.x release in between is handled by the same
branches:

============================  ===============================  ===============================
seam                          transformers 4.57 - 5.x early     transformers 5.x later
============================  ===============================  ===============================
empty model construction      ``init_empty_weights`` (4.x)      removed: :func:`empty_parameters`
skip weight init              ``modeling_utils``                ``initialization`` (5.0)
image features, ViT output    a tensor / tuple of tensors       ``BaseModelOutputWithPooling``
                                                                (``pooler_output``; 5.0)
mRoPE ``get_rope_index``      from ``input_ids`` alone          needs ``mm_token_type_ids`` (5.5)
KV cache argument / output    ``past_key_values``               ``cache`` (5.25)
``cache.update`` call         ``(k, v, layer, cache_kwargs)``   ``(k, v, layer)``, then
                                                                ``(k, v, layer, kwargs=...)``
``cache_position`` argument   accepted                          gone (5.5)
``TrainingArguments``         ``warmup_ratio``,                 ``warmup_steps`` < 1; always
                              ``save_safetensors``              safetensors (5.x)
ViT rotary table and windows  ``visual.rot_pos_emb`` and        ``transformers.vision_utils``
                              ``visual.get_window_index``       functions (5.17)
============================  ===============================  ===============================

(The release each change arrived in is where we saw it first, reading 4.57.6, 5.0.0, 5.5.0,
5.10.0, 5.17.0, 5.20.0 and 5.25.0.) transformers 5 is used on torch >= 2.6 only: 5.20+ refuse an
older torch themselves, and 5.0 declares torch 2.2 but calls torch 2.4 APIs. Config files need no
helper: :mod:`janus_core.checkpoint` reads both ``rope_scaling`` and transformers 5's
``rope_parameters``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import inspect
from collections.abc import Iterator
from typing import Any

import torch
import transformers
from torch import Tensor, nn
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen_modeling

MIN_TRANSFORMERS = (4, 57)  # 4.57.1, the oldest tested; keep equal to setup.py's lower bound
MIN_TORCH_FOR_TRANSFORMERS_5 = (2, 6)


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


TRANSFORMERS_VERSION = _version(transformers.__version__)
if TRANSFORMERS_VERSION < MIN_TRANSFORMERS:
    raise ImportError(
        f"janus_core needs transformers >= {'.'.join(map(str, MIN_TRANSFORMERS))}, found "
        f"{transformers.__version__}: pip install -U 'transformers>=4.57.1,<6'"
    )

if TRANSFORMERS_VERSION >= (5, 0) and _version(torch.__version__) < MIN_TORCH_FOR_TRANSFORMERS_5:
    # transformers 5.20+ disable torch < 2.6 themselves; 5.0 admits torch 2.2 but calls 2.4 APIs
    raise ImportError(
        f"transformers {transformers.__version__} is not supported on torch "
        f"{importlib.metadata.version('torch')} (transformers 5 needs torch >= 2.6 here); keep "
        f"this torch and install transformers 4.57: pip install 'transformers>=4.57.1,<5'"
    )

try:  # transformers >= 5.0
    from transformers.initialization import no_init_weights
except ImportError:  # transformers 4.x
    from transformers.modeling_utils import no_init_weights

__all__ = [
    "TRANSFORMERS_VERSION",
    "cache_arguments",
    "empty_parameters",
    "image_features",
    "image_token_types",
    "no_init_weights",
    "output_cache",
    "rope_index",
    "vision_output",
    "vision_rope_and_windows",
    "training_arguments",
]


# ---- building ------------------------------------------------------------------------------
@contextlib.contextmanager
def empty_parameters() -> Iterator[None]:
    """Put every ``nn.Parameter`` registered inside the block on the meta device.

    Buffers (rotary tables, normalisation constants) stay real on the current device, so the
    model holds no weight memory until a loader assigns real tensors. Parameters keep their
    class, dtype, shape and ``requires_grad``. (transformers 4.x had this as
    ``init_empty_weights(include_buffers=False)``; 5.x removed it.)
    """
    original = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = type(param)(
                param.to("meta"), requires_grad=param.requires_grad
            )

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = original


# ---- the vision tower ----------------------------------------------------------------------
def vision_output(output: Any) -> Tensor:
    """The merged visual tokens ``[tokens, hidden]`` from a call of ``model.visual``."""
    pooled = getattr(output, "pooler_output", None)  # transformers >= 5.0: a ModelOutput
    return output if pooled is None else pooled


def image_features(qwen_model: nn.Module, pixel_values: Tensor, grid_thw: Tensor) -> Tensor:
    """``Qwen2_5_VLModel.get_image_features``, all images concatenated: ``[tokens, hidden]``."""
    output = qwen_model.get_image_features(pixel_values, grid_thw)
    per_image = getattr(output, "pooler_output", output)  # 5.x: ModelOutput; 4.x: a tuple
    if isinstance(per_image, Tensor):
        return per_image
    return torch.cat(tuple(per_image), dim=0)


def vision_rope_and_windows(
    visual: nn.Module, grid_thw: Tensor
) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """The ViT's rotary table and window plan for images of ``grid_thw`` (as its forward builds).

    Returns ``(cos, sin, window_index, cu_window_seqlens)``: ``cos``/``sin`` ``[patches,
    head_dim]`` in patch order (before the window permutation), ``window_index`` over merged
    tokens, ``cu_window_seqlens`` as Python ints (repeated bounds kept, as transformers returns).
    """
    if hasattr(visual, "rot_pos_emb"):  # transformers 4.x to 5.1x
        rotary = visual.rot_pos_emb(grid_thw)
        table = torch.cat((rotary, rotary), dim=-1)
        cos, sin = table.cos(), table.sin()
        window_index, cu_windows = visual.get_window_index(grid_thw)
    else:  # transformers >= 5.17: shared helpers in transformers.vision_utils
        from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

        positions = get_vision_position_ids(grid_thw, visual.spatial_merge_size)
        probe = torch.empty(0, device=visual.rotary_pos_emb.inv_freq.device)
        cos, sin = visual.rotary_pos_emb(probe, positions.to(probe.device))
        window_index, cu_windows = get_vision_window_index(
            grid_thw, spatial_merge_size=visual.spatial_merge_size,
            window_size=visual.window_size, patch_size=visual.patch_size,
        )
    return cos, sin, window_index, [int(c) for c in cu_windows]


# ---- training --------------------------------------------------------------------------------
def training_arguments(**kwargs: Any) -> Any:
    """``transformers.TrainingArguments(**kwargs)``, written in transformers 4.57's names.

    transformers 5 dropped ``warmup_ratio`` (its ``warmup_steps`` takes a float below 1 as that
    ratio) and ``save_safetensors`` (it always writes safetensors, so only True is accepted).
    """
    from transformers import TrainingArguments

    names = inspect.signature(TrainingArguments).parameters
    if "warmup_ratio" in kwargs and "warmup_ratio" not in names:
        ratio = kwargs.pop("warmup_ratio")
        if kwargs.get("warmup_steps"):
            raise ValueError("give warmup_ratio or warmup_steps, not both")
        kwargs["warmup_steps"] = float(ratio)
    if "save_safetensors" in kwargs and "save_safetensors" not in names:
        if not kwargs.pop("save_safetensors"):
            raise ValueError(f"transformers {transformers.__version__} saves only safetensors")
    return TrainingArguments(**kwargs)


# ---- the language model --------------------------------------------------------------------
@functools.cache
def _text_forward_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(qwen_modeling.Qwen2_5_VLTextModel.forward).parameters)


@functools.cache
def _rope_index_takes_token_types() -> bool:
    return "mm_token_type_ids" in inspect.signature(qwen_modeling.Qwen2_5_VLModel.get_rope_index
                                                    ).parameters


def rope_index(
    qwen_model: nn.Module,
    input_ids: Tensor,
    image_grid_thw: Tensor | None,
    attention_mask: Tensor | None = None,
    image_token_id: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Multimodal RoPE positions ``([3, B, L], deltas [B, 1])`` from transformers' Qwen2.5-VL.

    transformers >= 5.5 finds the image tokens from ``mm_token_type_ids`` (1 = image, 0 = text);
    built here from ``image_token_id`` (default: the model config's).
    """
    if not _rope_index_takes_token_types():
        return qwen_model.get_rope_index(
            input_ids, image_grid_thw, None, attention_mask=attention_mask
        )
    if image_token_id is None:
        image_token_id = qwen_model.config.image_token_id
    token_types = image_token_types(input_ids, image_token_id)["mm_token_type_ids"]
    return qwen_model.get_rope_index(
        input_ids, token_types, image_grid_thw, None, attention_mask=attention_mask
    )


def image_token_types(input_ids: Tensor, image_token_id: int) -> dict[str, Tensor]:
    """What a stock Qwen2.5-VL forward or ``generate`` needs besides ``input_ids`` to place images.

    transformers >= 5.5 takes the image tokens' mRoPE positions only with ``mm_token_type_ids``
    (1 = image token), as its processor returns them; earlier ones find them in ``input_ids``.
    """
    if not _rope_index_takes_token_types():
        return {}
    return {"mm_token_type_ids": (input_ids == image_token_id).to(torch.int32)}


class _CacheForTransformers:
    """Presents one of our caches (``update(k, v, layer)``, ``get_seq_length()``) to transformers.

    transformers calls ``update`` with an extra positional dict (4.x, 5.0), nothing (5.5) or a
    ``kwargs=`` keyword (5.25); all are dropped here, so the caches in :mod:`janus_core.memory`
    keep one signature.
    """

    def __init__(self, cache: Any):
        self.cache = cache

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args, **kwargs):
        """Store one layer's new K/V in the wrapped cache; return all of that layer's K/V."""
        return self.cache.update(key_states, value_states, layer_idx)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens the wrapped cache holds."""
        return self.cache.get_seq_length(layer_idx)


def cache_arguments(
    cache: Any, cache_position: Tensor | None = None, own_cache: bool = False
) -> dict[str, Any]:
    """Keyword arguments passing ``cache`` to a Qwen2.5-VL forward, under this version's name.

    ``own_cache``: ``cache`` is one of ours (wrapped so any ``update`` call convention works);
    False for transformers' own caches (``DynamicCache``, or a ``past_key_values`` returned by
    a previous forward). ``cache_position`` is passed only where the forward still takes it.
    """
    if own_cache:
        cache = _CacheForTransformers(cache)
    names = _text_forward_parameters()
    arguments = {"cache" if "cache" in names else "past_key_values": cache}
    if cache_position is not None and "cache_position" in names:
        arguments["cache_position"] = cache_position
    return arguments


def output_cache(output: Any) -> Any:
    """The KV cache a forward with ``use_cache=True`` returned (``cache`` in 5.25+)."""
    if "cache" in _text_forward_parameters():
        return output.cache
    return output.past_key_values
