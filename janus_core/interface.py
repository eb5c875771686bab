"""What every policy takes and returns: the contract between policies and their drivers.

Drivers (the evaluation runner, the ROS navigator, DAgger) only use this module's types, so a
JanusVLN model, a baseline and the simulator expert are interchangeable behind them.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from janus_core.actions import Action


@dataclasses.dataclass
class Observation:
    """One camera frame and what else a policy may use at a step.

    ``rgb`` is HxWx3 uint8 in RGB order. ``depth`` (HxW float32 metres) and ``pose``
    (x, y, z, yaw in the world frame) are optional: JanusVLN uses RGB only.
    """

    rgb: np.ndarray
    depth: np.ndarray | None = None
    pose: tuple[float, float, float, float] | None = None
    stamp: float = 0.0


@dataclasses.dataclass
class StepResult:
    """What ``Policy.act`` returns: the action plus what a driver logs about the step.

    ``timings`` maps a stage name (e.g. ``vggt``, ``vit``, ``llm``, ``action``) to seconds.
    ``probs`` is the action distribution when the policy exposes one. ``text`` is the raw reply.
    """

    action: Action
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    probs: dict[str, float] | None = None
    text: str = ""
    parsed: bool = True
    step: int = 0


class Policy(abc.ABC):
    """A navigation policy: ``reset`` at the start of each episode, then ``act`` once per step.

    A policy owns its episode state (memories, history); nothing else holds it.
    """

    @abc.abstractmethod
    def reset(self, instruction: str) -> None:
        """Start a new episode that follows ``instruction``; forget the previous episode."""

    @abc.abstractmethod
    def act(self, observation: Observation) -> StepResult:
        """Choose the action for the current frame."""

    def close(self) -> None:
        """Free what the policy holds (GPU memory, files). Default: nothing."""
