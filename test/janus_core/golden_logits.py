"""Golden outputs of a tiny JanusVLN loaded from a checkpoint in the release's layout.

``data/tiny_release/`` is a checkpoint folder as the release ships one (``config.json`` in the
flat transformers-4.50 layout with ``lam`` / ``reference_frame``, ``model.safetensors`` with the
4.50 key names ``model.layers.*``, ``visual.*``, ``vggt.*``, ``merger.*``, bf16 weights, tokenizer
files, ``chat_template.json``, ``preprocessor_config.json``), of the tiny architecture at the
small test geometry, with random weights. ``data/golden_logits.safetensors`` holds what
:func:`compute` gives for it under the pinned versions (``requirements/policy.txt``):

- ``forward_logits``: the teacher-forced forward over the release's evaluation prompt with three
  frames (ViT + VGGT fusion, mRoPE from transformers), ``[tokens, vocab]`` in float32;
- ``streaming_scores``: the streaming policy's action log-probabilities for three steps.

``test_golden_logits.py`` recomputes both under whatever torch and transformers are installed
(``scripts/test_compat.sh`` runs it on the newest transformers 5 and on the oldest versions of
setup.py's ranges). Regenerate, only in the pinned environment and only when the model code
changes on purpose::

    python test/janus_core/golden_logits.py            # outputs only (keeps the checkpoint)
    python test/janus_core/golden_logits.py --checkpoint  # also a new random checkpoint
"""

from __future__ import annotations

import argparse
import logging
import platform
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file

from janus_core.checkpoint import save_checkpoint
from janus_core.config import ImageConfig, load_config
from janus_core.factory import build_policy
from janus_core.interface import Observation
from janus_core.model import build_model
from janus_core.tokenizer import build_tokenizer

DATA = Path(__file__).resolve().parent / "data"
CHECKPOINT = DATA / "tiny_release"
GOLDEN = DATA / "golden_logits.safetensors"
INSTRUCTION = "Walk past the sofa, turn left and stop at the kitchen door."
# a 126x98 camera: VGGT 98x126, Qwen crop 84x112 (12 merged tokens per image)
SMALL_IMAGE = ImageConfig(input_width=126, input_height=98, target_width=126)

log = logging.getLogger(__name__)


def camera_frames(n: int, seed: int = 7) -> list[np.ndarray]:
    """``n`` uint8 frames from numpy's legacy RandomState (its stream never changes)."""
    rng = np.random.RandomState(seed)
    shape = (SMALL_IMAGE.input_height, SMALL_IMAGE.input_width, 3)
    return [rng.randint(0, 256, size=shape).astype(np.uint8) for _ in range(n)]


def write_checkpoint(path: Path = CHECKPOINT) -> Path:
    """A new random tiny checkpoint in the release's layout (bf16 weights)."""
    cfg = load_config("tiny").replace(image=SMALL_IMAGE, name="janusvln-tiny-golden")
    torch.manual_seed(0)
    model = build_model(cfg, device="cpu", dtype="bfloat16")
    return save_checkpoint(model, build_tokenizer(cfg), cfg, path)


@torch.no_grad()
def compute(path: Path = CHECKPOINT) -> dict[str, torch.Tensor]:
    """The golden quantities for the checkpoint at ``path``, on the CPU in float32."""
    policy = build_policy(path, device="cpu", dtype="float32")
    model, processor = policy.model, policy.processor
    resized = [processor.preprocess_frame(f) for f in camera_frames(3)]
    pixel_values, grid = processor.qwen_inputs(resized)
    ids = processor.prompt_ids(INSTRUCTION, len(resized))
    vggt = torch.stack([processor.vggt_input(f) for f in resized])
    logits = model(ids, pixel_values, grid, vggt_frames=[vggt]).logits[0].float()

    streaming = build_policy(path, device="cpu", dtype="float32", mode="streaming")
    streaming.reset(INSTRUCTION)
    scores = []
    for rgb in camera_frames(3, seed=8):
        streaming.act(Observation(rgb=rgb))
        scores.append(streaming.last_scores.float())
    return {"forward_logits": logits.contiguous(), "streaming_scores": torch.stack(scores)}


def versions() -> dict[str, str]:
    """The versions that produced a result (stored in the golden file's metadata)."""
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    """Regenerate the golden file (and with ``--checkpoint`` the checkpoint)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="store_true", help="write a new checkpoint too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.checkpoint:
        write_checkpoint()
    outputs = compute()
    save_file(outputs, str(GOLDEN), metadata=versions())
    back = load_file(str(GOLDEN))
    log.info("wrote %s: %s", GOLDEN, {k: tuple(v.shape) for k, v in back.items()})


if __name__ == "__main__":
    main()
