"""The simulator's shortest-path expert as a :class:`janus_core.interface.Policy`.

The expert ignores the instruction and the image: each step it asks the simulator which action
follows the geodesic to the episode goal. It is the upper-bound baseline of the evaluation
runner, the labeller for DAgger and the source of generated ground-truth paths.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from janus_core.actions import Action
from janus_core.interface import Observation, Policy, StepResult


class ExpertPolicy(Policy):
    """Asks ``sim.expert_action(goal)`` for every step.

    ``sim`` is any simulator with ``expert_action(goal=None) -> Action`` (the goal of the current
    episode when None). The policy must be driven by the same simulator it queries, after
    ``sim.reset(episode)``; the observation itself is not used.
    """

    def __init__(self, sim: Any, goal: Sequence[float] | None = None):
        self.sim = sim
        self.goal = list(goal) if goal is not None else None
        self._step = 0

    def reset(self, instruction: str) -> None:
        """Start a new episode (the instruction is not needed)."""
        self._step = 0

    def act(self, observation: Observation) -> StepResult:
        """The simulator's expert action for the agent's current state."""
        self._step += 1
        start = time.perf_counter()
        action = Action(int(self.sim.expert_action(goal=self.goal)))
        return StepResult(
            action=action,
            timings={"expert": time.perf_counter() - start},
            text=action.name,
            step=self._step,
        )
