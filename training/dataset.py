"""The SFT dataset: annotation sets -> tokenised per-step samples with both encoders' images.

:class:`NavSFTDataset` indexes every (trajectory, step) of one or more annotation directories and
turns each into the model's training inputs (see :mod:`training.samples` for which frames and
which label):

- ``input_ids`` / ``labels``: the release's training prompt (generic system turn, role sentence
  with history/current ``<image>`` labels in the user turn, minimal template), each image expanded
  to ``tokens_per_image`` pads; only the assistant's action word, ``<|im_end|>`` and the newline
  are supervised (:meth:`janus_core.processor.JanusProcessor.train_sample`).
- ``pixel_values`` / ``image_grid_thw``: Qwen's patches of every sampled frame.
- ``vggt_frames``: the sampled frames as VGGT input ``[n, 3, H, W]`` in [0, 1]; the model runs
  them through VGGT in order with a fresh cache and fuses the last (current) frame's features, as
  the release trains.

A data source is a directory (or its ``annotations.json``) with an optional ``%NN`` suffix that
keeps a fixed random NN % of its trajectories, like the release's dataset names.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from janus_core.processor import IGNORE_INDEX, JanusProcessor
from training.annotations import AnnotationError, AnnotationSet, Trajectory, load_annotations
from training.samples import StepSample, step_sample

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DataSource:
    """One annotation directory and the share of its trajectories to use."""

    path: Path
    percent: float = 100.0

    @classmethod
    def parse(cls, spec: str | Path) -> DataSource:
        """``"dir"`` or ``"dir%NN"`` (NN in (0, 100])."""
        text = str(spec)
        percent = 100.0
        if "%" in text:
            text, _, pct = text.rpartition("%")
            try:
                percent = float(pct)
            except ValueError:
                raise ValueError(f"data source {spec!r}: {pct!r} after '%' is not a number") \
                    from None
            if not 0 < percent <= 100:
                raise ValueError(f"data source {spec!r}: percent must be in (0, 100]")
        return cls(Path(text), percent)


def load_sources(
    sources: Sequence[str | Path | DataSource], verify_frames: bool = True, seed: int = 42
) -> list[AnnotationSet]:
    """Load every source (subsampled to its percent with ``seed``) as an :class:`AnnotationSet`."""
    out = []
    for spec in sources:
        src = spec if isinstance(spec, DataSource) else DataSource.parse(spec)
        aset = load_annotations(src.path, verify_frames=verify_frames)
        if src.percent < 100:
            keep = max(1, round(len(aset) * src.percent / 100))
            rng = random.Random(f"{seed}|{src.path}")
            chosen = sorted(rng.sample(range(len(aset)), keep))
            aset = AnnotationSet(aset.root, [aset.trajectories[i] for i in chosen])
            log.info("%s: kept %d trajectories (%.1f %%)", src.path, keep, src.percent)
        out.append(aset)
    return out


def load_frame(path: Path, trajectory: str, annotations: Path) -> np.ndarray:
    """Read one JPEG frame as HxWx3 uint8; a missing or unreadable file names the trajectory."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise AnnotationError(
            f"{annotations}: trajectory {trajectory!r}: missing frame {path}"
        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise AnnotationError(
            f"{annotations}: trajectory {trajectory!r}: cannot read frame {path} ({err})"
        ) from err


class NavSFTDataset(Dataset):
    """Every step of every trajectory of ``sets``, as model inputs (see module docstring)."""

    def __init__(self, sets: Sequence[AnnotationSet], processor: JanusProcessor,
                 num_history: int | None = None):
        self.sets = list(sets)
        self.processor = processor
        self.num_history = (
            processor.cfg.memory.num_history if num_history is None else int(num_history)
        )
        index: list[tuple[int, int, int]] = []
        for si, aset in enumerate(self.sets):
            for ti, traj in enumerate(aset.trajectories):
                index.extend((si, ti, step) for step in range(traj.num_frames))
        self.index = index
        if not index:
            raise AnnotationError("the training data holds no trajectories: "
                                  + ", ".join(str(s.path) for s in self.sets))

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, idx: int) -> tuple[AnnotationSet, Trajectory, StepSample]:
        """The annotation set, trajectory and :class:`StepSample` behind item ``idx``."""
        si, ti, step = self.index[idx]
        aset = self.sets[si]
        traj = aset.trajectories[ti]
        return aset, traj, step_sample(aset, traj, step, self.num_history)

    def num_images(self, idx: int) -> int:
        """How many frames item ``idx`` shows (for length grouping)."""
        return min(self.index[idx][2], self.num_history) + 1

    def __getitem__(self, idx: int) -> dict[str, Any]:
        aset, traj, sample = self.sample(idx)
        frames = []
        for path in sample.frame_paths:
            rgb = load_frame(path, traj.video, aset.path)
            image = self.processor.cfg.image
            if tuple(rgb.shape[:2]) != (image.input_height, image.input_width):
                # a policy brings any camera to its input; training data of another size is a
                # recording mistake (the model would learn another geometry), so it is refused
                raise AnnotationError(
                    f"{aset.path}: trajectory {traj.video!r}: frame {path}: "
                    f"{rgb.shape[1]}x{rgb.shape[0]}, expected the model's camera size "
                    f"{image.input_width}x{image.input_height}")
            try:
                frames.append(self.processor.preprocess_frame(rgb))
            except ValueError as err:
                raise AnnotationError(f"{aset.path}: trajectory {traj.video!r}: frame {path}: "
                                      f"{err}") from err
        input_ids, labels = self.processor.train_sample(
            sample.instruction, len(frames), sample.action.name
        )
        pixel_values, grid_thw = self.processor.qwen_inputs(frames)
        vggt_frames = torch.stack([self.processor.vggt_input(f) for f in frames])
        return {
            "input_ids": input_ids,
            "labels": labels,
            "pixel_values": pixel_values,
            "image_grid_thw": grid_thw,
            "vggt_frames": vggt_frames,
        }


@dataclasses.dataclass
class SFTCollator:
    """Pads a list of samples into one batch (right padding; labels padded with -100)."""

    pad_token_id: int

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Batch ``items``: ``pixel_values``/``image_grid_thw`` concatenated, VGGT frames listed."""
        length = max(len(it["input_ids"]) for it in items)
        n = len(items)
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((n, length), dtype=torch.long)
        for i, it in enumerate(items):
            k = len(it["input_ids"])
            input_ids[i, :k] = it["input_ids"]
            labels[i, :k] = it["labels"]
            attention[i, :k] = 1
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention,
            "pixel_values": torch.cat([it["pixel_values"] for it in items]),
            "image_grid_thw": torch.cat([it["image_grid_thw"] for it in items]),
            "vggt_frames": [it["vggt_frames"] for it in items],
        }
