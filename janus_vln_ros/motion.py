"""A discrete action becomes one bounded motion segment: pure Python, no rclpy.

``plan_motion(action, limits)`` turns MOVE_FORWARD / TURN_LEFT / TURN_RIGHT into a
:class:`MotionSegment` (a trapezoidal velocity profile that covers exactly ``forward_distance``
metres or ``turn_angle`` radians within the speed and acceleration limits). STOP gives None.

A segment is driven by one of two followers, both stepped by the caller's control loop with the
time since the segment started and (optionally) the latest odometry pose:

* :class:`TimedFollower` replays the profile open-loop. Each command is the average velocity of
  the profile over the coming control interval, so a base that holds each command until the next
  one (zero-order hold) covers the planned distance exactly.
* :class:`OdometryFollower` closes the loop on odometry: it measures progress from the pose at
  the start (distance along the start heading, or accumulated yaw), slows down as the remaining
  distance shrinks, stops within the tolerance, and gives up after a timeout.

Sign conventions follow REP 103: +x forward, +yaw counter-clockwise, so TURN_LEFT is +angular.z.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from janus_core.actions import Action


class MotionError(ValueError):
    """Invalid motion limits; the text names the field and the allowed range."""


@dataclasses.dataclass(frozen=True)
class Velocity:
    """A planar body velocity command: ``linear`` m/s along +x, ``angular`` rad/s about +z."""

    linear: float = 0.0
    angular: float = 0.0

    @property
    def is_zero(self) -> bool:
        """True when both components are exactly zero."""
        return self.linear == 0.0 and self.angular == 0.0


ZERO = Velocity()


@dataclasses.dataclass(frozen=True)
class Pose2D:
    """A planar pose: position in metres, heading ``yaw`` in radians (odometry frame)."""

    x: float
    y: float
    yaw: float


def wrap_angle(angle: float) -> float:
    """Wrap ``angle`` to [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Heading (rotation about +z) of a unit quaternion."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


@dataclasses.dataclass(frozen=True)
class MotionLimits:
    """How big one step is and how fast it may be executed.

    Accelerations of 0 mean "step to full speed at once" (a rectangular profile). The minimum
    speeds are used only by the odometry follower so that it finishes against friction. A
    closed-loop segment gives up after ``timeout_factor`` times the planned duration plus
    ``timeout_margin`` seconds.
    """

    forward_distance: float = 0.25
    turn_angle: float = math.radians(15.0)
    max_linear_speed: float = 0.25
    max_angular_speed: float = 0.5
    linear_acceleration: float = 0.5
    angular_acceleration: float = 1.5
    position_tolerance: float = 0.01
    angle_tolerance: float = math.radians(1.0)
    min_linear_speed: float = 0.02
    min_angular_speed: float = 0.05
    timeout_factor: float = 3.0
    timeout_margin: float = 1.0

    def __post_init__(self):
        positive = ("forward_distance", "turn_angle", "max_linear_speed", "max_angular_speed")
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise MotionError(f"{name} must be a finite number > 0, got {value!r}")
        non_negative = (
            "linear_acceleration", "angular_acceleration", "position_tolerance",
            "angle_tolerance", "min_linear_speed", "min_angular_speed", "timeout_margin",
        )
        for name in non_negative:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise MotionError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.min_linear_speed > self.max_linear_speed:
            raise MotionError(
                f"min_linear_speed ({self.min_linear_speed}) exceeds max_linear_speed "
                f"({self.max_linear_speed})"
            )
        if self.min_angular_speed > self.max_angular_speed:
            raise MotionError(
                f"min_angular_speed ({self.min_angular_speed}) exceeds max_angular_speed "
                f"({self.max_angular_speed})"
            )
        if not (math.isfinite(self.timeout_factor) and self.timeout_factor >= 1.0):
            raise MotionError(f"timeout_factor must be >= 1, got {self.timeout_factor!r}")


@dataclasses.dataclass(frozen=True)
class TrapezoidProfile:
    """Speed over time that covers ``distance`` from rest to rest.

    Accelerates at ``acceleration`` up to ``max_speed``, cruises, and decelerates symmetrically;
    when the distance is too short to reach ``max_speed`` the profile is a triangle. An
    acceleration of 0 means an instantaneous step (a rectangle). All quantities are magnitudes.
    """

    distance: float
    max_speed: float
    acceleration: float

    def __post_init__(self):
        if self.distance < 0.0 or self.max_speed <= 0.0 or self.acceleration < 0.0:
            raise MotionError(
                f"profile needs distance >= 0, max_speed > 0, acceleration >= 0; got {self}"
            )

    @property
    def ramp_time(self) -> float:
        """Seconds spent accelerating (equal to the time spent decelerating)."""
        if self.acceleration == 0.0 or self.distance == 0.0:
            return 0.0
        full = self.max_speed / self.acceleration
        if self.acceleration * full * full >= self.distance:  # triangle: never reaches max_speed
            return math.sqrt(self.distance / self.acceleration)
        return full

    @property
    def peak_speed(self) -> float:
        """The highest speed reached."""
        if self.distance == 0.0:
            return 0.0
        if self.acceleration == 0.0:
            return self.max_speed
        return self.acceleration * self.ramp_time

    @property
    def duration(self) -> float:
        """Total time from start to standstill."""
        if self.distance == 0.0:
            return 0.0
        ramp = self.ramp_time
        ramp_distance = self.acceleration * ramp * ramp  # both ramps together
        return 2.0 * ramp + (self.distance - ramp_distance) / self.peak_speed

    def velocity(self, t: float) -> float:
        """Speed at time ``t`` (0 outside the profile)."""
        duration = self.duration
        if t < 0.0 or t >= duration:
            return 0.0
        ramp = self.ramp_time
        if ramp == 0.0:
            return self.peak_speed
        if t < ramp:
            return self.acceleration * t
        if t > duration - ramp:
            return self.acceleration * (duration - t)
        return self.peak_speed

    def position(self, t: float) -> float:
        """Distance covered by time ``t`` (clamped to [0, distance])."""
        duration = self.duration
        if t <= 0.0:
            return 0.0
        if t >= duration:
            return self.distance
        ramp, a, peak = self.ramp_time, self.acceleration, self.peak_speed
        if t < ramp:
            return 0.5 * a * t * t
        if t <= duration - ramp:
            return 0.5 * a * ramp * ramp + peak * (t - ramp)
        left = duration - t
        return self.distance - 0.5 * a * left * left


@dataclasses.dataclass(frozen=True)
class MotionSegment:
    """The motion for one action: move ``target`` along ``axis`` in direction ``sign``.

    ``axis`` is ``"linear"`` (metres) or ``"angular"`` (radians); ``sign`` is +1 or -1.
    """

    action: Action
    axis: str
    sign: int
    target: float
    profile: TrapezoidProfile

    @property
    def duration(self) -> float:
        """Planned seconds for the open-loop profile."""
        return self.profile.duration

    def velocity(self, speed: float) -> Velocity:
        """A signed command of magnitude ``speed`` on this segment's axis."""
        if self.axis == "linear":
            return Velocity(linear=self.sign * speed)
        return Velocity(angular=self.sign * speed)


def plan_motion(action: Action, limits: MotionLimits) -> MotionSegment | None:
    """Plan the bounded motion for ``action``; None for STOP (the caller stops the robot)."""
    action = Action(action)
    if action == Action.STOP:
        return None
    if action == Action.MOVE_FORWARD:
        profile = TrapezoidProfile(
            limits.forward_distance, limits.max_linear_speed, limits.linear_acceleration
        )
        return MotionSegment(action, "linear", 1, limits.forward_distance, profile)
    sign = 1 if action == Action.TURN_LEFT else -1
    profile = TrapezoidProfile(
        limits.turn_angle, limits.max_angular_speed, limits.angular_acceleration
    )
    return MotionSegment(action, "angular", sign, limits.turn_angle, profile)


class MotionOutcome(enum.Enum):
    """Where a follower stands after an update."""

    RUNNING = "running"
    DONE = "done"
    TIMEOUT = "timeout"


class TimedFollower:
    """Open-loop execution of a segment's profile, one command per control interval ``dt``."""

    closed_loop = False

    def __init__(self, segment: MotionSegment, dt: float):
        if not dt > 0.0:
            raise MotionError(f"control interval must be > 0, got {dt!r}")
        self.segment = segment
        self.dt = dt

    def update(self, t: float, pose: Pose2D | None = None) -> tuple[Velocity, MotionOutcome]:
        """Command for the interval starting ``t`` seconds into the segment.

        The speed is the profile's average over [t, t + dt]; past the end of the profile the
        command is zero and the outcome DONE. ``pose`` is ignored.
        """
        profile = self.segment.profile
        if t >= profile.duration - 1e-9:
            return ZERO, MotionOutcome.DONE
        start = max(t, 0.0)
        covered = profile.position(start + self.dt) - profile.position(start)
        return self.segment.velocity(covered / self.dt), MotionOutcome.RUNNING


class OdometryFollower:
    """Closed-loop execution of a segment on odometry poses.

    Progress is the displacement along the heading at the start (MOVE_FORWARD) or the yaw turned
    since the start, accumulated so that turns of any size work (TURN_*). The commanded speed is
    the largest one that still allows stopping within the remaining distance at the configured
    deceleration, limited by the acceleration ramp from the start, the maximum speed, and raised
    to the minimum speed so that the robot does not stall short of the goal.
    """

    closed_loop = True

    def __init__(self, segment: MotionSegment, start: Pose2D, limits: MotionLimits):
        self.segment = segment
        self.start = start
        self.limits = limits
        self._yaw_turned = 0.0
        self._last_yaw = start.yaw
        self.timeout = limits.timeout_factor * segment.duration + limits.timeout_margin

    def progress(self, pose: Pose2D) -> float:
        """Distance (m) or angle (rad) covered in the segment's direction so far."""
        if self.segment.axis == "linear":
            dx, dy = pose.x - self.start.x, pose.y - self.start.y
            along = dx * math.cos(self.start.yaw) + dy * math.sin(self.start.yaw)
            return self.segment.sign * along
        self._yaw_turned += wrap_angle(pose.yaw - self._last_yaw)
        self._last_yaw = pose.yaw
        return self.segment.sign * self._yaw_turned

    def update(self, t: float, pose: Pose2D | None) -> tuple[Velocity, MotionOutcome]:
        """Command for the latest ``pose`` at ``t`` seconds into the segment."""
        if pose is None:
            raise MotionError("OdometryFollower.update needs a pose")
        remaining = self.segment.target - self.progress(pose)
        linear = self.segment.axis == "linear"
        tolerance = self.limits.position_tolerance if linear else self.limits.angle_tolerance
        if remaining <= tolerance:
            return ZERO, MotionOutcome.DONE
        if t > self.timeout:
            return ZERO, MotionOutcome.TIMEOUT
        if linear:
            top, floor = self.limits.max_linear_speed, self.limits.min_linear_speed
            accel = self.limits.linear_acceleration
        else:
            top, floor = self.limits.max_angular_speed, self.limits.min_angular_speed
            accel = self.limits.angular_acceleration
        speed = top
        if accel > 0.0:
            speed = min(speed, math.sqrt(2.0 * accel * remaining), accel * max(t, 0.0) + floor)
        return self.segment.velocity(max(speed, floor)), MotionOutcome.RUNNING


def make_follower(
    segment: MotionSegment,
    limits: MotionLimits,
    dt: float,
    start_pose: Pose2D | None,
) -> TimedFollower | OdometryFollower:
    """Closed loop on odometry when a start pose is given, otherwise the timed profile."""
    if start_pose is None:
        return TimedFollower(segment, dt)
    return OdometryFollower(segment, start_pose, limits)
