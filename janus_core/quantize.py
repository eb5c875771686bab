"""8-bit or 4-bit weights for small GPUs, through bitsandbytes (CUDA only, imported lazily).

``streaming.quantize: int8`` (LLM.int8, outlier threshold 6.0) or ``nf4`` (4-bit NormalFloat,
bf16 compute) swaps every ``nn.Linear`` of the chosen parts of a loaded model for its
bitsandbytes counterpart, in place. Parts: ``llm`` (the Qwen decoder layers; ``lm_head`` and the
embeddings stay in the model dtype, as transformers' bitsandbytes integration keeps them),
``vit`` (the Qwen vision tower), ``vggt`` (the aggregator) and ``merger`` (the VGGT merger).

Weights at full size, bf16: LLM decoder ~6.5 B parameters ~12.2 GiB; int8 halves that, nf4
quarters it (plus small per-block scales). See docs/streaming.md for the 24 GB configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from janus_core.model import JanusVLNModel

log = logging.getLogger(__name__)

METHODS = ("none", "int8", "nf4")


class QuantizationError(RuntimeError):
    """Quantization was asked for where it cannot run (no CUDA, no bitsandbytes, bad option)."""


def _part(model: JanusVLNModel, name: str) -> nn.Module | None:
    if name == "llm":
        return model.qwen.model.language_model.layers
    if name == "vit":
        return model.qwen.model.visual
    if name == "vggt":
        return model.vggt
    if name == "merger":
        return model.merger
    raise QuantizationError(f"unknown part {name!r}; choose from 'llm', 'vit', 'vggt', 'merger'")


def _import_bitsandbytes():
    try:
        import bitsandbytes
    except ImportError as err:
        raise QuantizationError(
            "8-bit/4-bit weights need bitsandbytes on a CUDA machine: pip install bitsandbytes "
            "(or set streaming.quantize: none)"
        ) from err
    return bitsandbytes


def _convert(linear: nn.Linear, method: str, bnb, threshold: float) -> nn.Module:
    device, dtype = linear.weight.device, linear.weight.dtype
    weight = linear.weight.data.to("cpu")  # bitsandbytes quantizes on the move to the GPU
    has_bias = linear.bias is not None
    if method == "int8":
        new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                  has_fp16_weights=False, threshold=threshold)
        new.weight = bnb.nn.Int8Params(weight.to(torch.float16), requires_grad=False,
                                       has_fp16_weights=False)
    else:
        new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                compute_dtype=dtype, quant_type="nf4")
        new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    if has_bias:
        new.bias = nn.Parameter(linear.bias.data.to("cpu"), requires_grad=False)
    new = new.to(device)
    if has_bias:
        new.bias.data = new.bias.data.to(dtype)
    return new


def quantize_model(
    model: JanusVLNModel, method: str, parts: Sequence[str] = ("llm",), threshold: float = 6.0
) -> int:
    """Replace the ``nn.Linear`` layers of ``parts`` by ``method`` layers; returns how many.

    ``method``: ``none`` (nothing happens), ``int8`` or ``nf4``. The model must be on a CUDA
    device and bitsandbytes installed, else :class:`QuantizationError` says which is missing.
    Inference only (the new weights do not train).
    """
    if method not in METHODS:
        raise QuantizationError(f"quantize must be one of {list(METHODS)}, got {method!r}")
    if method == "none":
        return 0
    roots = [(name, _part(model, name)) for name in parts]
    if model.device.type != "cuda":
        raise QuantizationError(
            f"quantize {method!r} runs on CUDA GPUs only (bitsandbytes kernels); the model is "
            f"on {model.device}. Use quantize 'none' on this device"
        )
    bnb = _import_bitsandbytes()
    done = (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)
    count = 0
    for part, root in roots:
        if root is None:
            continue
        for module in list(root.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.Linear) and not isinstance(child, done):
                    setattr(module, child_name, _convert(child, method, bnb, threshold))
                    count += 1
        log.info("quantized %s to %s", part, method)
    if model.device.type == "cuda":
        torch.cuda.empty_cache()
    return count
