"""Build a JanusVLN policy from a checkpoint folder or a preset: the one place that picks the mode.

``reference`` mode is :class:`janus_core.policy.JanusVLNPolicy` (the release's loop) and
``streaming`` mode is its subclass :class:`janus_core.streaming.StreamingPolicy`. This module
imports both and neither imports it, so the imports run one way (policy <- streaming <-
factory)::

    from janus_core.factory import build_policy
    policy = build_policy("path/to/checkpoint")             # cfg.mode from the checkpoint
    policy = build_policy("tiny", device="cpu", mode="streaming")   # preset, random weights
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from janus_core.checkpoint import config_from_checkpoint, load_model
from janus_core.config import ConfigError, load_config
from janus_core.model import JanusVLNModel, build_model
from janus_core.policy import JanusVLNPolicy
from janus_core.processor import JanusProcessor
from janus_core.streaming import StreamingPolicy
from janus_core.tokenizer import build_tokenizer, load_chat_template, load_tokenizer

log = logging.getLogger(__name__)

POLICY_CLASSES: dict[str, type[JanusVLNPolicy]] = {
    "reference": JanusVLNPolicy,
    "streaming": StreamingPolicy,
}


def load_components(
    source: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **overrides: Any,
) -> tuple[JanusVLNModel, JanusProcessor]:
    """The model and processor of a checkpoint folder, or of a preset name / YAML file.

    ``overrides`` replace top-level config fields (e.g. ``max_steps=500``, ``mode=...``). A
    preset gets random weights and a generated tokenizer
    (:func:`janus_core.tokenizer.build_tokenizer`): only for tests and benchmarks, it has not
    seen real text.
    """
    path = Path(source)
    if path.is_dir():
        cfg = config_from_checkpoint(path)
        cfg = cfg.replace(**overrides) if overrides else cfg
        model = load_model(path, device=device, dtype=dtype, cfg=cfg)
        tokenizer = load_tokenizer(path, cfg)
        template = load_chat_template(path, tokenizer)
    else:
        cfg = load_config(source)
        cfg = cfg.replace(**overrides) if overrides else cfg
        log.warning("policy %s: random weights, generated tokenizer (no checkpoint)", source)
        model = build_model(cfg, device=device, dtype=dtype)
        tokenizer = build_tokenizer(cfg)
        template = None
    return model, JanusProcessor(cfg, tokenizer, chat_template=template)


def policy_class(mode: str) -> type[JanusVLNPolicy]:
    """The policy class for ``cfg.mode`` (``reference`` or ``streaming``)."""
    try:
        return POLICY_CLASSES[mode]
    except KeyError:
        raise ConfigError(f"mode must be one of {sorted(POLICY_CLASSES)}, got {mode!r}") from None


def build_policy(
    spec: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **overrides: Any,
) -> JanusVLNPolicy:
    """A policy from a checkpoint folder or a preset name (``tiny``, ``full``) / YAML file.

    Returns a :class:`JanusVLNPolicy` or, when ``cfg.mode`` is ``streaming``, a
    :class:`StreamingPolicy` (options from ``cfg.streaming``). ``overrides`` as in
    :func:`load_components`.
    """
    model, processor = load_components(spec, device=device, dtype=dtype, **overrides)
    return policy_class(model.cfg.mode)(model, processor)
