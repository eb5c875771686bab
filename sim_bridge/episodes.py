"""VLN-CE episodes: the records the simulators, the metrics and the evaluation runner share.

Field names follow the official R2R_VLNCE / RxR_VLNCE JSON formats. Positions are habitat world
coordinates (metres, y up); rotations are quaternions in habitat's [x, y, z, w] order.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Goal:
    """A navigation goal: a point and the radius around it."""

    position: list[float]
    radius: float | None = 3.0


@dataclasses.dataclass
class Episode:
    """One VLN-CE episode, plus its dense ground truth when a ``_gt`` file provided one.

    ``gt_locations`` / ``gt_actions`` come from ``{split}_gt.json.gz`` (dense expert path and
    action ids); ``language`` is set for RxR episodes.
    """

    episode_id: str
    scene_id: str
    start_position: list[float]
    start_rotation: list[float]
    goals: list[Goal]
    instruction: str
    trajectory_id: int | str = 0
    reference_path: list[list[float]] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    language: str | None = None
    instruction_id: str | None = None
    gt_locations: list[list[float]] | None = None
    gt_actions: list[int] | None = None

    @property
    def goal_position(self) -> list[float]:
        """The (first) goal's position."""
        return self.goals[0].position
