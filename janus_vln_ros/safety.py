"""When the navigator may drive, and why it does not: pure logic, no rclpy.

:class:`SafetyMonitor` holds what the node knows about its inputs (image freshness, instruction,
e-stop, pause, policy faults, episode end, lifecycle) and :meth:`SafetyMonitor.evaluate` returns
the single most important :class:`StopReason` that forbids motion right now, or
``StopReason.NONE`` when the robot may drive. Times are seconds on a monotonic clock supplied by
the caller, so the rules are tested without sleeping.
"""

from __future__ import annotations

import dataclasses
import enum
import math


class StopReason(str, enum.Enum):
    """Why the robot is not driving (the value is what the status topic shows)."""

    NONE = "none"
    SHUTDOWN = "shutdown"
    INACTIVE = "inactive"
    ESTOP = "estop"
    POLICY_ERROR = "policy_error"
    NO_INSTRUCTION = "no_instruction"
    EPISODE_DONE = "episode_done"
    MAX_STEPS = "max_steps"
    STOPPED = "stopped"
    PAUSED = "paused"
    NO_IMAGE = "no_image"
    STALE_IMAGE = "stale_image"
    BAD_IMAGE = "bad_image"
    NO_ODOMETRY = "no_odometry"
    MOTION_TIMEOUT = "motion_timeout"


# diagnostic_msgs/DiagnosticStatus levels, without importing the message here
OK, WARN, ERROR = 0, 1, 2

_LEVELS = {
    StopReason.NONE: OK,
    StopReason.SHUTDOWN: OK,
    StopReason.INACTIVE: OK,
    StopReason.NO_INSTRUCTION: OK,
    StopReason.EPISODE_DONE: OK,
    StopReason.MAX_STEPS: WARN,
    StopReason.STOPPED: OK,
    StopReason.PAUSED: OK,
    StopReason.ESTOP: WARN,
    StopReason.NO_IMAGE: WARN,
    StopReason.STALE_IMAGE: WARN,
    StopReason.BAD_IMAGE: WARN,
    StopReason.NO_ODOMETRY: WARN,
    StopReason.MOTION_TIMEOUT: WARN,
    StopReason.POLICY_ERROR: ERROR,
}

# reasons that end the episode: they hold until a new instruction or a reset
EPISODE_END_REASONS = frozenset(
    {StopReason.EPISODE_DONE, StopReason.MAX_STEPS, StopReason.STOPPED}
)


def level(reason: StopReason) -> int:
    """The diagnostics level (OK 0, WARN 1, ERROR 2) for ``reason``."""
    return _LEVELS[StopReason(reason)]


@dataclasses.dataclass
class SafetyMonitor:
    """Input state and the rule that says whether the robot may move.

    Priority, highest first: shutdown, inactive, e-stop, policy error (for ``policy_error_retry``
    seconds after the fault), no instruction, episode ended, paused, then the camera: never a
    valid frame (NO_IMAGE, or BAD_IMAGE when only invalid frames came), or no valid frame within
    ``image_timeout`` (BAD_IMAGE if invalid frames keep coming, else STALE_IMAGE), and last,
    when ``require_odometry`` is set, no odometry within ``odom_timeout`` (NO_ODOMETRY).
    """

    image_timeout: float = 0.5
    policy_error_retry: float = 1.0
    odom_timeout: float = 0.5
    require_odometry: bool = False
    last_odom: float | None = None
    shutdown: bool = False
    active: bool = False
    estop: bool = False
    paused: bool = False
    instruction: str | None = None
    episode_end: StopReason | None = None
    last_valid_image: float | None = None
    last_invalid_image: float | None = None
    image_error: str = ""
    policy_error_at: float | None = None
    policy_error: str = ""

    def __post_init__(self):
        for name in ("image_timeout", "policy_error_retry", "odom_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def image_received(self, now: float) -> None:
        """A valid camera frame arrived at ``now``."""
        self.last_valid_image = now

    def image_rejected(self, now: float, error: str) -> None:
        """An invalid camera frame arrived at ``now``; ``error`` says what was wrong."""
        self.last_invalid_image = now
        self.image_error = error

    def odom_received(self, now: float) -> None:
        """An odometry message arrived at ``now``."""
        self.last_odom = now

    def odom_fresh(self, now: float) -> bool:
        """Whether odometry arrived within ``odom_timeout`` of ``now``."""
        last = self.last_odom
        return last is not None and now - last <= self.odom_timeout

    def set_instruction(self, text: str) -> bool:
        """Set the instruction; empty or whitespace clears it. Returns True when it is usable."""
        cleaned = text.strip()
        self.instruction = cleaned or None
        self.episode_end = None
        return self.instruction is not None

    def policy_failed(self, now: float, error: str) -> None:
        """The policy raised at ``now``."""
        self.policy_error_at = now
        self.policy_error = error

    def policy_succeeded(self) -> None:
        """The policy answered: clear a previous fault."""
        self.policy_error_at = None
        self.policy_error = ""

    def end_episode(self, reason: StopReason) -> None:
        """Hold the robot until a new instruction or reset; ``reason`` must be an episode end."""
        reason = StopReason(reason)
        if reason not in EPISODE_END_REASONS:
            raise ValueError(f"{reason} does not end an episode; use one of {EPISODE_END_REASONS}")
        self.episode_end = reason

    def image_fresh(self, now: float) -> bool:
        """Whether a valid frame arrived within ``image_timeout`` of ``now``."""
        last = self.last_valid_image
        return last is not None and now - last <= self.image_timeout

    def evaluate(self, now: float) -> tuple[StopReason, str]:
        """The reason that forbids motion at ``now`` (``NONE`` if none) and a human detail."""
        if self.shutdown:
            return StopReason.SHUTDOWN, "node is shutting down"
        if not self.active:
            return StopReason.INACTIVE, "node is not active"
        if self.estop:
            return StopReason.ESTOP, "e-stop engaged"
        fault_at = self.policy_error_at
        if fault_at is not None and now - fault_at < self.policy_error_retry:
            return StopReason.POLICY_ERROR, f"policy raised: {self.policy_error}"
        if self.instruction is None:
            return StopReason.NO_INSTRUCTION, "waiting for an instruction"
        if self.episode_end is not None:
            return self.episode_end, "episode ended; waiting for a new instruction or reset"
        if self.paused:
            return StopReason.PAUSED, "paused by service call"
        if self.image_fresh(now):
            if self.require_odometry and not self.odom_fresh(now):
                return StopReason.NO_ODOMETRY, (
                    f"motion_mode is odometry and no odometry for over {self.odom_timeout:.2f} s"
                )
            return StopReason.NONE, ""
        bad_recent = self.last_invalid_image is not None and (
            self.last_valid_image is None or self.last_invalid_image > self.last_valid_image
        ) and now - self.last_invalid_image <= self.image_timeout
        if bad_recent:
            return StopReason.BAD_IMAGE, f"camera frames are invalid: {self.image_error}"
        if self.last_valid_image is None:
            return StopReason.NO_IMAGE, "no camera frame received yet"
        age = now - self.last_valid_image
        return StopReason.STALE_IMAGE, (
            f"no camera frame for {age:.2f} s (image_timeout {self.image_timeout:.2f} s)"
        )


class LogLimiter:
    """Let a message through once per ``period`` seconds per key (a distinct error text).

    rclpy's throttling is per call site, which would hide a second, different bad input that
    arrives within the period; this keys on the message instead.
    """

    def __init__(self, period: float = 5.0, max_keys: int = 256):
        self.period = period
        self.max_keys = max_keys
        self._last: dict[str, float] = {}

    def allow(self, key: str, now: float) -> bool:
        """True when ``key`` was not let through within the last ``period`` seconds."""
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = now
        return True
