"""The release's DAgger expert: the simulator's shortest-path expert, waypoint by waypoint.

The release's expert (habitat ``ShortestPathFollower``) heads for the next point of the episode's
reference path, not straight for the goal, so its corrections keep to the route the instruction
describes. A waypoint counts as reached once the geodesic distance to it is below
``waypoint_radius`` (1.8 m), the last one (the goal) below ``final_radius`` (0.25 m), where the
expert answers STOP.

Works with any simulator exposing ``position``, ``geodesic_distance(a, b)`` and
``expert_action(goal=None)`` (``sim_bridge.simulator`` backends do).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from janus_core.actions import Action

log = logging.getLogger(__name__)


class WaypointExpert:
    """Follows ``episode.reference_path`` (minus its start point) and then the goal."""

    def __init__(self, sim: Any, episode: Any, waypoint_radius: float = 1.8,
                 final_radius: float = 0.25):
        self.sim = sim
        self.waypoint_radius = float(waypoint_radius)
        self.final_radius = float(final_radius)
        path = [list(map(float, p)) for p in (episode.reference_path or [])]
        self.waypoints: list[list[float]] = path[1:-1] + [list(map(float, episode.goal_position))]
        self.index = 0

    @property
    def num_segments(self) -> int:
        """Waypoints to visit, the goal included."""
        return len(self.waypoints)

    @property
    def final(self) -> bool:
        """True when heading for the goal."""
        return self.index >= len(self.waypoints) - 1

    @property
    def target(self) -> list[float]:
        """The waypoint currently aimed at."""
        return self.waypoints[self.index]

    def distance_to_target(self) -> float:
        """Geodesic distance from the agent to the current waypoint."""
        return float(self.sim.geodesic_distance(self.sim.position, self.target))

    def advance(self) -> int:
        """Move past every intermediate waypoint already reached; returns how many."""
        moved = 0
        while not self.final:
            dist = self.distance_to_target()
            if math.isfinite(dist) and dist >= self.waypoint_radius:
                break
            if not math.isfinite(dist):
                log.warning("waypoint %d %s is unreachable; skipping it", self.index, self.target)
            self.index += 1
            moved += 1
        return moved

    def action(self) -> Action:
        """The expert's action towards the current waypoint (STOP only at the goal)."""
        if self.final:
            return Action(int(self.sim.expert_action()))
        action = Action(int(self.sim.expert_action(goal=self.target)))
        if action == Action.STOP:  # the simulator's expert thinks it has arrived: next waypoint
            self.index += 1
            return self.action()
        return action
