"""Shared helpers for the janus_core model/processor/checkpoint/policy tests (tiny sizes only)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from janus_core.config import ImageConfig, JanusConfig, load_config
from janus_core.tokenizer import build_tokenizer

# A 126x98 camera frame: VGGT 98x126 (7x9 patches), Qwen crop 84x112 (6x8 patches, 3x4 = 12
# merged tokens). Odd VGGT grid on both axes, so the bottom/right crop is exercised.
SMALL_IMAGE = ImageConfig(input_width=126, input_height=98, target_width=126)


def small_cfg(**changes) -> JanusConfig:
    """The tiny preset at the small test geometry, with top-level ``changes``."""
    cfg = load_config("tiny").replace(image=SMALL_IMAGE)
    return cfg.replace(**changes) if changes else cfg


@functools.cache
def _tokenizer(qwen_key: tuple):
    return build_tokenizer(load_config("tiny"))


def tokenizer_for(cfg: JanusConfig):
    """The generated tokenizer for ``cfg`` (cached: building one takes ~0.1 s)."""
    if dataclasses.astuple(cfg.qwen) != dataclasses.astuple(load_config("tiny").qwen):
        return build_tokenizer(cfg)
    return _tokenizer(dataclasses.astuple(cfg.qwen))


def frames(cfg: JanusConfig, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` random uint8 camera frames of ``cfg``'s input size."""
    rng = np.random.default_rng(seed)
    shape = (cfg.image.input_height, cfg.image.input_width, 3)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
