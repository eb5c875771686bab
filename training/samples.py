"""Per-step training samples, built from trajectories exactly as the release builds them.

A trajectory with T frames gives T samples (reference digest §5.2). Sample i shows the model
frames ``0..i`` when ``i <= num_history`` (8), else the ``num_history + 1`` frames at
``linspace(0, i, 9)`` cast to int (frame 0 and frame i always in, frame i last), and its target is
the single action label of frame i (``actions[i + 1]``, STOP for the last frame).

:func:`release_sample` also writes a sample in the release's own JSON form
(``{id, conversations: [{from: human, value}, {from: gpt, value}], images}``) so a set can be
exported for the original training code (:func:`export_release_json`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from janus_core.actions import Action
from janus_core.processor import sample_history, train_user_text
from training.annotations import AnnotationSet, Trajectory

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StepSample:
    """One training sample: which frames to show, the instruction and the target action."""

    sample_id: str
    frame_paths: tuple[Path, ...]  # sampled frames, current frame last
    instruction: str
    action: Action
    trajectory: str  # video of the trajectory, for error messages
    step: int


def step_sample(aset: AnnotationSet, traj: Trajectory, step: int,
                num_history: int = 8) -> StepSample:
    """The sample of frame ``step`` of ``traj``."""
    if not 0 <= step < traj.num_frames:
        raise IndexError(f"{traj.video}: step {step} outside 0..{traj.num_frames - 1}")
    indices = sample_history(step, num_history)
    return StepSample(
        sample_id=f"{traj.name}_{step:03d}",
        frame_paths=tuple(aset.frame_path(traj, i) for i in indices),
        instruction=traj.instruction,
        action=traj.labels()[step],
        trajectory=traj.video,
        step=step,
    )


def iter_samples(aset: AnnotationSet, num_history: int = 8) -> Iterator[StepSample]:
    """Every sample of every trajectory in ``aset``, in file order."""
    for traj in aset.trajectories:
        labels = traj.labels()
        for step in range(traj.num_frames):
            indices = sample_history(step, num_history)
            yield StepSample(
                sample_id=f"{traj.name}_{step:03d}",
                frame_paths=tuple(aset.frame_path(traj, i) for i in indices),
                instruction=traj.instruction,
                action=labels[step],
                trajectory=traj.video,
                step=step,
            )


def release_sample(sample: StepSample, relative_to: Path | None = None) -> dict[str, Any]:
    """The sample in the release's JSON form (human turn with ``<image>`` placeholders)."""
    paths: Sequence[Path] = sample.frame_paths
    if relative_to is not None:
        paths = [p.relative_to(relative_to) for p in paths]
    return {
        "id": sample.sample_id,
        "conversations": [
            {"from": "human", "value": train_user_text(sample.instruction, len(paths))},
            {"from": "gpt", "value": sample.action.name},
        ],
        "images": [str(p) for p in paths],
    }


def export_release_json(aset: AnnotationSet, out: str | Path, num_history: int = 8) -> int:
    """Write every sample of ``aset`` as a release-style training json; returns the count."""
    out = Path(out)
    rows = [release_sample(s) for s in iter_samples(aset, num_history)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows), encoding="utf-8")
    log.info("%s: %d samples", out, len(rows))
    return len(rows)
