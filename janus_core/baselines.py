"""Baseline policies that need no model: random and forward-only (VLN-CE's standard baselines)."""

from __future__ import annotations

import time

import numpy as np

from janus_core.actions import Action
from janus_core.interface import Observation, Policy, StepResult


class RandomPolicy(Policy):
    """Uniform over the three motion actions, STOP with probability ``stop_prob`` per step.

    Seeded per episode from ``seed`` and the episode count, so runs are reproducible.
    """

    def __init__(self, seed: int = 0, stop_prob: float = 0.02):
        if not 0.0 <= stop_prob <= 1.0:
            raise ValueError(f"stop_prob must be in [0, 1], got {stop_prob}")
        self.seed = seed
        self.stop_prob = stop_prob
        self._episode = 0
        self._rng = np.random.default_rng(seed)
        self._step = 0

    def reset(self, instruction: str) -> None:
        """Reseed for a new episode."""
        self._rng = np.random.default_rng([self.seed, self._episode])
        self._episode += 1
        self._step = 0

    def act(self, observation: Observation) -> StepResult:
        """Draw an action."""
        self._step += 1
        if self._rng.random() < self.stop_prob:
            action = Action.STOP
        else:
            action = Action(int(self._rng.integers(1, 4)))
        return StepResult(action=action, step=self._step)


class ForwardOnlyPolicy(Policy):
    """Always MOVE_FORWARD (stopping after ``max_forward`` steps if set)."""

    def __init__(self, max_forward: int | None = None):
        self.max_forward = max_forward
        self._step = 0

    def reset(self, instruction: str) -> None:
        """Start counting again."""
        self._step = 0

    def act(self, observation: Observation) -> StepResult:
        """Move forward, or STOP once ``max_forward`` steps were taken."""
        self._step += 1
        if self.max_forward is not None and self._step > self.max_forward:
            return StepResult(action=Action.STOP, step=self._step)
        return StepResult(action=Action.MOVE_FORWARD, step=self._step)


class ConstantPolicy(Policy):
    """Always the same action after an optional fixed delay: a constant-time policy for tests.

    ``delay_s`` makes ``act`` take a known time (the navigator benchmark measures what the node
    adds around it). ``fail_steps`` lists 1-based step numbers, counted from the episode start,
    at which ``act`` raises RuntimeError, to exercise a driver's fault handling.
    """

    def __init__(self, action: Action, delay_s: float = 0.0, fail_steps: tuple[int, ...] = ()):
        if not delay_s >= 0.0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.action = Action(action)
        self.delay_s = float(delay_s)
        self.fail_steps = frozenset(int(s) for s in fail_steps)
        self._step = 0

    def reset(self, instruction: str) -> None:
        """Start counting steps again."""
        self._step = 0

    def act(self, observation: Observation) -> StepResult:
        """Wait ``delay_s``, then return the constant action (or raise on a fail step)."""
        self._step += 1
        start = time.perf_counter()
        if self.delay_s:
            time.sleep(self.delay_s)
        if self._step in self.fail_steps:
            raise RuntimeError(f"ConstantPolicy: scripted failure at step {self._step}")
        elapsed = time.perf_counter() - start
        return StepResult(
            action=self.action, step=self._step, timings={"constant": elapsed},
            text=self.action.name,
        )
