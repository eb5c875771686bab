"""When the navigator may drive, and why it does not: pure logic, no rclpy.

:class:`SafetyMonitor` holds what the node knows about its inputs (image freshness, instruction,
e-stop, pause, policy faults, episode end, lifecycle) and :meth:`SafetyMonitor.evaluate` returns
the single most important :class:`StopReason` that forbids motion right now, or
``StopReason.NONE`` when the robot may drive. Times are seconds on a monotonic clock supplied by
the caller, so the rules are tested without sleeping.

What latches (the node keeps one monitor for its whole life, so none of this is forgotten across
lifecycle transitions or a restart of the e-stop publisher):

* **E-stop**: engaged until an explicit release (``estop`` false).
* **Pause**: until ``~/resume``.
* **Hold** (``require_resume``, the default): after an e-stop release, and after the camera went
  stale or invalid while the robot was allowed to drive, the robot stays stopped until
  ``~/resume`` or a new instruction, as an operator expects after a hazard stop.
* **Policy fault**: from a failed step until a step succeeds. Retries back off exponentially
  (``policy_error_retry`` doubling up to ``policy_error_retry_max``); :meth:`policy_failed` says
  whether the error text is new in this fault, so each distinct error is logged once.
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
    HOLD = "hold"
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
    StopReason.HOLD: WARN,
    StopReason.NO_ODOMETRY: WARN,
    StopReason.MOTION_TIMEOUT: WARN,
    StopReason.POLICY_ERROR: ERROR,
}

# reasons that end the episode: they hold until a new instruction or a reset
EPISODE_END_REASONS = frozenset(
    {StopReason.EPISODE_DONE, StopReason.MAX_STEPS, StopReason.STOPPED}
)
# stops an operator or the episode asks for: the robot decelerates within its limits. Every
# other reason (e-stop, stale or bad camera, policy error, deactivate, shutdown) zeroes at once.
SOFT_STOP_REASONS = frozenset(
    {StopReason.PAUSED, StopReason.NO_INSTRUCTION, *EPISODE_END_REASONS}
)
# hazards after which the robot waits for ~/resume or a new instruction (require_resume)
HOLD_REASONS = frozenset({StopReason.ESTOP, StopReason.STALE_IMAGE, StopReason.BAD_IMAGE})


def level(reason: StopReason) -> int:
    """The diagnostics level (OK 0, WARN 1, ERROR 2) for ``reason``."""
    return _LEVELS[StopReason(reason)]


@dataclasses.dataclass
class SafetyMonitor:
    """Input state and the rule that says whether the robot may move.

    Priority, highest first: shutdown, inactive, e-stop, policy fault (until a step succeeds),
    no instruction, episode ended, paused, then the camera: never a valid frame (NO_IMAGE, or
    BAD_IMAGE when only invalid frames came), or no valid frame within ``image_timeout``
    (BAD_IMAGE if invalid frames keep coming, else STALE_IMAGE), then a hold after a hazard
    (HOLD), and last, when ``require_odometry`` is set, no odometry within ``odom_timeout``
    (NO_ODOMETRY).
    """

    image_timeout: float = 0.5
    policy_error_retry: float = 1.0
    policy_error_retry_max: float = 30.0
    odom_timeout: float = 0.5
    require_odometry: bool = False
    require_resume: bool = True
    last_odom: float | None = None
    shutdown: bool = False
    active: bool = False
    estop: bool = False
    paused: bool = False
    hold: StopReason | None = None  # the hazard the robot waits for ~/resume after
    instruction: str | None = None
    episode_end: StopReason | None = None
    last_valid_image: float | None = None
    last_invalid_image: float | None = None
    image_error: str = ""
    policy_error: str = ""
    policy_failures: int = 0  # consecutive failed steps
    policy_retry_at: float = 0.0  # no step before this time while faulted
    _errors_seen: set[str] = dataclasses.field(default_factory=set, repr=False)

    def __post_init__(self):
        self.configure(
            image_timeout=self.image_timeout, policy_error_retry=self.policy_error_retry,
            policy_error_retry_max=self.policy_error_retry_max, odom_timeout=self.odom_timeout,
        )

    def configure(self, **settings) -> None:
        """Change the timing settings (and ``require_odometry``/``require_resume``), checked.

        Latched state (e-stop, pause, hold, a policy fault) is kept.
        """
        for name, value in settings.items():
            if name in ("require_odometry", "require_resume"):
                setattr(self, name, bool(value))
                continue
            if name not in ("image_timeout", "policy_error_retry", "policy_error_retry_max",
                            "odom_timeout"):
                raise ValueError(f"unknown safety setting {name!r}")
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            setattr(self, name, float(value))

    # ------------------------------------------------------------------ inputs
    def image_received(self, now: float) -> None:
        """A valid camera frame arrived at ``now``; a previous image error is cleared."""
        self.last_valid_image = now
        self.image_error = ""

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
        """Set the instruction; empty or whitespace clears it. Returns True when it is usable.

        A new instruction ends the previous episode and releases a hold (not a pause).
        """
        cleaned = text.strip()
        self.instruction = cleaned or None
        self.episode_end = None
        self.hold = None
        return self.instruction is not None

    def set_estop(self, engaged: bool) -> bool:
        """An e-stop message; returns True when it changed the state.

        A release of an engaged e-stop leaves a hold when ``require_resume`` is set.
        """
        engaged = bool(engaged)
        if engaged == self.estop:
            return False
        self.estop = engaged
        if not engaged and self.require_resume:
            self.hold = StopReason.ESTOP
        return True

    def resume(self) -> None:
        """``~/resume``: clear a pause and a hold (an engaged e-stop stays engaged)."""
        self.paused = False
        self.hold = None

    def policy_failed(self, now: float, error: str) -> bool:
        """The policy raised at ``now``; back off. True when ``error`` is new in this fault."""
        self.policy_failures += 1
        delay = self.policy_error_retry * 2.0 ** min(self.policy_failures - 1, 60)
        self.policy_retry_at = now + min(delay, self.policy_error_retry_max)
        self.policy_error = error
        new = error not in self._errors_seen
        if new and len(self._errors_seen) < 256:
            self._errors_seen.add(error)
        return new

    def policy_succeeded(self) -> None:
        """A step succeeded: the fault (and its backoff) is over."""
        self.policy_error = ""
        self.policy_failures = 0
        self.policy_retry_at = 0.0
        self._errors_seen.clear()

    @property
    def policy_faulted(self) -> bool:
        """Whether the last step failed (until one succeeds)."""
        return self.policy_failures > 0

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

    # ------------------------------------------------------------------ the rule
    def evaluate(self, now: float) -> tuple[StopReason, str]:
        """The reason that forbids motion at ``now`` (``NONE`` if none) and a human detail.

        May latch a hold (camera stale or invalid while the robot was allowed to drive).
        """
        return self._evaluate(now, include_fault=True)

    def may_step(self, now: float) -> bool:
        """Whether a policy step may start at ``now``.

        Nothing may stand in the way but a policy fault whose backoff is over (a retry).
        """
        if self._evaluate(now, include_fault=False)[0] != StopReason.NONE:
            return False
        return not self.policy_faulted or now >= self.policy_retry_at

    def _evaluate(self, now: float, include_fault: bool) -> tuple[StopReason, str]:
        if self.shutdown:
            return StopReason.SHUTDOWN, "node is shutting down"
        if not self.active:
            return StopReason.INACTIVE, "node is not active"
        if self.estop:
            return StopReason.ESTOP, "e-stop engaged: publish false on the e-stop topic to release"
        if include_fault and self.policy_faulted:
            wait = max(0.0, self.policy_retry_at - now)
            return StopReason.POLICY_ERROR, (
                f"policy raised: {self.policy_error} ({self.policy_failures} failed step(s) in a "
                f"row; next try in {wait:.1f} s)"
            )
        if self.instruction is None:
            return StopReason.NO_INSTRUCTION, "waiting for an instruction"
        if self.episode_end is not None:
            return self.episode_end, "episode ended; waiting for a new instruction or reset"
        if self.paused:
            return StopReason.PAUSED, "paused by service call; call ~/resume to continue"
        if not self.image_fresh(now):
            reason, detail = self._camera_problem(now)
            if reason in HOLD_REASONS and self.require_resume:
                self.hold = reason
            return reason, detail
        if self.hold is not None:
            return StopReason.HOLD, (
                f"stopped after {self.hold.value}; call ~/resume or send a new instruction to "
                "drive again"
            )
        if self.require_odometry and not self.odom_fresh(now):
            return StopReason.NO_ODOMETRY, (
                f"motion_mode is odometry and no odometry for over {self.odom_timeout:.2f} s"
            )
        return StopReason.NONE, ""

    def _camera_problem(self, now: float) -> tuple[StopReason, str]:
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
