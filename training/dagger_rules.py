"""The release's DAgger rule, as pure logic: who drives each step, and which episodes are kept.

JanusVLN's DAgger (reference digest §5.5) is on-policy rollouts with expert recovery, then a filter:

- **Mixing.** With probability ``beta`` a step is the expert's; the release uses ``beta = 0``, so
  the model drives by default.
- **Waypoints.** The expert heads for the next reference-path waypoint (arrival radius 1.8 m, the
  final waypoint 0.25 m); a waypoint advances when the expert reports it has arrived there.
- **Errors, and the expert taking over.** The model fails when it says STOP while still at least
  3 m from the goal, or when its disagreements with the expert in the current reference segment
  exceed ``min(0.8 x GT actions of that segment, 12)``. The expert then drives until the next
  waypoint, where the model gets control back and the disagreement count restarts.
- **Premature STOP.** A model STOP outside the final segment (and closer than 3 m) is replaced by
  the expert's action for that step, without counting as a failure.
- **Labels.** The recorded label of a frame is the action actually executed (model or expert).
- **Filter.** Keep an episode if its final distance to goal is below 0.5 m and either the model
  failed at some point and ``pl < 0.93``, or ``pl < 0.85``; ``pl`` = shortest path /
  max(shortest path, distance travelled).

Nothing here touches a simulator or a model; :mod:`training.dagger` drives it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from janus_core.actions import Action


@dataclasses.dataclass
class DaggerRule:
    """Thresholds of the release's DAgger rule (defaults are the release's values)."""

    beta: float = 0.0  # probability that the expert drives a step regardless (release DAGGER_P)
    stop_error_distance: float = 3.0  # a model STOP at least this far from the goal is an error
    disagreement_ratio: float = 0.8  # error when disagreements > ratio x GT actions of the segment
    max_disagreements: int = 12  # ... or > this many
    waypoint_radius: float = 1.8  # expert's arrival radius at intermediate waypoints
    final_waypoint_radius: float = 0.25  # and at the final one
    keep_distance: float = 0.5  # keep only episodes ending closer than this to the goal
    keep_pl_if_failed: float = 0.93  # keep if the model failed and pl < this
    keep_pl: float = 0.85  # or if pl < this

    def __post_init__(self):
        """Reject values outside their range, naming the field."""
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"dagger rule: beta must be in [0, 1], got {self.beta}")
        for name in ("stop_error_distance", "disagreement_ratio", "waypoint_radius",
                     "final_waypoint_radius", "keep_distance"):
            if getattr(self, name) < 0:
                raise ValueError(f"dagger rule: {name} must be >= 0, got {getattr(self, name)}")
        if self.max_disagreements < 0:
            raise ValueError("dagger rule: max_disagreements must be >= 0")

    def disagreement_limit(self, segment_gt_actions: int) -> float:
        """Disagreements tolerated in a segment with ``segment_gt_actions`` GT actions."""
        return min(self.disagreement_ratio * segment_gt_actions, float(self.max_disagreements))


class Decision(NamedTuple):
    """The action executed at one step, who chose it, and the error that caused a takeover."""

    action: Action
    by: str  # "model" or "expert"
    error: str | None = None  # "stop_far", "disagreements" when this step started a takeover


class DaggerController:
    """Per-episode state of the rule: the current segment, disagreements, expert control.

    Call :meth:`waypoint_reached` whenever the expert arrives at the current waypoint (the driver
    checks this before each step), then :meth:`decide` with both actions.
    """

    def __init__(self, rule: DaggerRule, segment_gt_actions: Sequence[int],
                 rng: random.Random | None = None):
        if not segment_gt_actions:
            raise ValueError("an episode has at least one reference segment")
        self.rule = rule
        self.segment_gt_actions = [max(1, int(n)) for n in segment_gt_actions]
        self.rng = rng or random.Random(0)
        self.segment = 0
        self.disagreements = 0
        self.expert_control = False
        self.failures = 0
        self.model_steps = 0
        self.expert_steps = 0

    @property
    def num_segments(self) -> int:
        """Reference segments (waypoints after the start) in this episode."""
        return len(self.segment_gt_actions)

    @property
    def final_segment(self) -> bool:
        """True while heading for the last waypoint (the goal)."""
        return self.segment >= self.num_segments - 1

    @property
    def waypoint_radius(self) -> float:
        """The expert's arrival radius for the current waypoint."""
        return self.rule.final_waypoint_radius if self.final_segment else self.rule.waypoint_radius

    @property
    def model_failed(self) -> bool:
        """True once the model has made an error that handed control to the expert."""
        return self.failures > 0

    def waypoint_reached(self) -> None:
        """The expert arrived at the current waypoint: move on, give control back to the model."""
        if not self.final_segment:
            self.segment += 1
        self.expert_control = False
        self.disagreements = 0

    def _take_over(self, expert_action: Action, error: str) -> Decision:
        self.expert_control = True
        self.failures += 1
        self.expert_steps += 1
        return Decision(expert_action, "expert", error)

    def decide(self, model_action: Action, expert_action: Action,
               distance_to_goal: float) -> Decision:
        """The action to execute this step, given both proposals and the distance to goal."""
        model_action, expert_action = Action(model_action), Action(expert_action)
        if self.expert_control or (self.rule.beta > 0 and self.rng.random() < self.rule.beta):
            self.expert_steps += 1
            return Decision(expert_action, "expert")
        if model_action == Action.STOP:
            if distance_to_goal >= self.rule.stop_error_distance:
                return self._take_over(expert_action, "stop_far")
            if not self.final_segment:
                self.expert_steps += 1
                return Decision(expert_action, "expert")
            self.model_steps += 1
            return Decision(Action.STOP, "model")
        if model_action != expert_action:
            self.disagreements += 1
            limit = self.rule.disagreement_limit(self.segment_gt_actions[self.segment])
            if self.disagreements > limit:
                return self._take_over(expert_action, "disagreements")
        self.model_steps += 1
        return Decision(model_action, "model")


def path_ratio(shortest: float, travelled: float) -> float:
    """The release's ``pl``: shortest path / max(shortest path, distance travelled)."""
    denom = max(float(shortest), float(travelled))
    if denom <= 0.0:
        return 1.0
    return float(shortest) / denom


def keep_episode(rule: DaggerRule, final_distance: float, pl: float, model_failed: bool) -> bool:
    """The release's save filter (see module docstring)."""
    if not final_distance < rule.keep_distance:
        return False
    return (model_failed and pl < rule.keep_pl_if_failed) or pl < rule.keep_pl


def segment_gt_actions(
    reference_path: Sequence[Sequence[float]],
    gt_locations: Sequence[Sequence[float]] | None = None,
    gt_actions: Sequence[int] | None = None,
    forward_step: float = 0.25,
    turn_angle_deg: float = 15.0,
) -> list[int]:
    """GT action count of each reference segment (waypoint ``j - 1`` to waypoint ``j``).

    With the dense ``_gt`` path, each waypoint is matched (in order) to the nearest later GT
    location, and a segment's count is the number of GT actions between consecutive matches.
    Without it, the count is estimated from geometry: forward steps along the segment plus the
    turns needed at its start (the angle to the previous segment's direction).
    """
    ref = np.asarray(reference_path, dtype=np.float64)
    if ref.ndim != 2 or len(ref) < 2:
        return [max(1, len(gt_actions) if gt_actions else 1)]
    n_segments = len(ref) - 1
    if gt_locations is not None and gt_actions is not None and len(gt_locations) > 1:
        loc = np.asarray(gt_locations, dtype=np.float64)
        total = len(gt_actions)
        idx = [0]
        for j in range(1, n_segments):
            start = idx[-1]
            d = np.linalg.norm(loc[start:, [0, 2]] - ref[j, [0, 2]], axis=1)
            idx.append(start + int(np.argmin(d)))
        idx.append(max(total, idx[-1]))
        return [max(1, idx[j + 1] - idx[j]) for j in range(n_segments)]
    counts = []
    prev_dir = None
    for j in range(n_segments):
        delta = ref[j + 1, [0, 2]] - ref[j, [0, 2]]
        length = float(np.linalg.norm(delta))
        forward = math.ceil(length / forward_step - 1e-9) if length > 0 else 0
        turns = 0
        if prev_dir is not None and length > 0:
            cos = float(np.dot(prev_dir, delta) / length)
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
            turns = round(angle / turn_angle_deg)
        if length > 0:
            prev_dir = delta / length
        counts.append(max(1, forward + turns))
    return counts
