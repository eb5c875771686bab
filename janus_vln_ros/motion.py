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
import functools
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
    """Speed over time that covers ``distance`` from ``start_speed`` to rest.

    Changes speed at ``acceleration`` towards ``max_speed`` (up from rest or from a slower start,
    down from a faster one), cruises, and decelerates at ``acceleration`` to a stop; when the
    distance is too short to reach ``max_speed`` the profile is a triangle. An acceleration of 0
    means instantaneous speed changes (a rectangle at ``max_speed``). A start speed too high to
    stop within ``distance`` at ``acceleration`` decelerates harder, just enough to stop there
    (the only case where the profile exceeds its acceleration). All quantities are magnitudes.
    """

    distance: float
    max_speed: float
    acceleration: float
    start_speed: float = 0.0

    def __post_init__(self):
        if (self.distance < 0.0 or self.max_speed <= 0.0 or self.acceleration < 0.0
                or self.start_speed < 0.0):
            raise MotionError(
                "profile needs distance >= 0, max_speed > 0, acceleration >= 0, start_speed >= 0;"
                f" got {self}"
            )

    @functools.cached_property
    def _phases(self) -> tuple[float, float, float, float, float, float]:
        """``(t1, t2, t3, peak, a1, a3)`` of the profile.

        Change to ``peak`` at signed rate ``a1`` for t1 s, cruise t2 s, stop at rate ``a3`` over
        t3 s.
        """
        d, vmax, a, v0 = self.distance, self.max_speed, self.acceleration, self.start_speed
        if d == 0.0:
            return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        if a == 0.0:
            return 0.0, d / vmax, 0.0, vmax, 0.0, 0.0
        if v0 * v0 / (2.0 * a) >= d:  # cannot stop within d at a: stop exactly at d
            return 0.0, 0.0, 2.0 * d / v0, v0, 0.0, v0 * v0 / (2.0 * d)
        peak = min(vmax, math.sqrt((2.0 * a * d + v0 * v0) / 2.0))
        t1 = abs(peak - v0) / a
        d1 = abs(peak * peak - v0 * v0) / (2.0 * a)
        d3 = peak * peak / (2.0 * a)
        t2 = max(0.0, d - d1 - d3) / peak
        return t1, t2, peak / a, peak, math.copysign(a, peak - v0), a

    @property
    def ramp_time(self) -> float:
        """Seconds spent decelerating to rest (also the acceleration time from rest)."""
        return self._phases[2]

    @property
    def peak_speed(self) -> float:
        """The highest speed reached after the start."""
        return self._phases[3]

    @property
    def duration(self) -> float:
        """Total time from start to standstill."""
        t1, t2, t3 = self._phases[:3]
        return t1 + t2 + t3

    def velocity(self, t: float) -> float:
        """Speed at time ``t`` (0 outside the profile)."""
        t1, t2, t3, peak, a1, a3 = self._phases
        if t < 0.0 or t >= t1 + t2 + t3:
            return 0.0
        if t < t1:
            return self.start_speed + a1 * t
        if t < t1 + t2 or t3 == 0.0:
            return peak
        return max(0.0, peak - a3 * (t - t1 - t2))

    def position(self, t: float) -> float:
        """Distance covered by time ``t`` (clamped to [0, distance])."""
        t1, t2, t3, peak, a1, a3 = self._phases
        if t <= 0.0:
            return 0.0
        if t >= t1 + t2 + t3:
            return self.distance
        if t < t1:
            return self.start_speed * t + 0.5 * a1 * t * t
        d1 = self.start_speed * t1 + 0.5 * a1 * t1 * t1
        if t <= t1 + t2:
            return d1 + peak * (t - t1)
        left = t1 + t2 + t3 - t
        return self.distance - 0.5 * a3 * left * left


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
    """Open-loop execution of a segment's profile, one command per control interval ``dt``.

    :meth:`extend` adds distance in the same direction without stopping and :meth:`brake` turns
    the rest of the motion into a stop at the configured deceleration; both re-plan from the
    next control tick, so the commands still integrate exactly to the distance covered.
    """

    closed_loop = False

    def __init__(self, segment: MotionSegment, dt: float):
        if not dt > 0.0:
            raise MotionError(f"control interval must be > 0, got {dt!r}")
        self.segment = segment
        self.dt = dt
        self.profile = segment.profile
        self.target = segment.target  # total distance, extensions included
        self._origin = 0.0  # follower time at which self.profile starts
        self._base = 0.0  # distance covered before self.profile started
        self._next_t = 0.0  # time of the next command

    def update(self, t: float, pose: Pose2D | None = None) -> tuple[Velocity, MotionOutcome]:
        """Command for the interval starting ``t`` seconds into the segment.

        The speed is the profile's average over [t, t + dt]; past the end of the profile the
        command is zero and the outcome DONE. ``pose`` is ignored.
        """
        self._next_t = t + self.dt
        local = t - self._origin
        profile = self.profile
        if local >= profile.duration - 1e-9:
            return ZERO, MotionOutcome.DONE
        start = max(local, 0.0)
        covered = profile.position(start + self.dt) - profile.position(start)
        return self.segment.velocity(covered / self.dt), MotionOutcome.RUNNING

    @property
    def progress(self) -> float:
        """Distance the commands sent so far integrate to."""
        return self._base + self.profile.position(self._next_t - self._origin)

    def time_left(self) -> float:
        """Seconds until the motion ends as planned."""
        return max(0.0, self.profile.duration - (self._next_t - self._origin))

    def time_to_brake(self) -> float:
        """Seconds until the final deceleration starts (0 once it has)."""
        return max(0.0, self.time_left() - self.profile.ramp_time)

    def _replan(self, distance: float) -> None:
        local = self._next_t - self._origin
        covered = self.profile.position(local)
        speed = self.profile.velocity(local)
        old = self.profile
        self._base += covered
        self._origin = self._next_t
        self.profile = TrapezoidProfile(distance, old.max_speed, old.acceleration, speed)

    def extend(self, distance: float) -> None:
        """Go ``distance`` further in the same direction, without stopping in between."""
        remaining = self.profile.distance - self.profile.position(self._next_t - self._origin)
        self._replan(remaining + distance)
        self.target += distance

    def brake(self) -> None:
        """Stop as soon as the acceleration limit allows (at once when it is 0)."""
        speed = self.profile.velocity(self._next_t - self._origin)
        a = self.profile.acceleration
        self._replan(speed * speed / (2.0 * a) if a > 0.0 else 0.0)
        self.target = self._base + self.profile.distance


class OdometryFollower:
    """Closed-loop execution of a segment on odometry poses.

    Progress is the displacement along the heading at the start (MOVE_FORWARD) or the yaw turned
    since the start, accumulated so that turns of any size work (TURN_*). The commanded speed is
    the largest one that still allows stopping within the remaining distance at the configured
    deceleration, limited by the acceleration ramp from the start, the maximum speed, and raised
    to the minimum speed so that the robot does not stall short of the goal. :meth:`extend`
    moves the goal further (no stop in between); :meth:`brake` moves it to where the robot can
    stop from its current speed.
    """

    closed_loop = True

    def __init__(self, segment: MotionSegment, start: Pose2D, limits: MotionLimits):
        self.segment = segment
        self.start = start
        self.limits = limits
        self.target = segment.target
        self._yaw_turned = 0.0
        self._last_yaw = start.yaw
        self._progress = 0.0
        self._speed = 0.0  # magnitude of the last command
        self._t = 0.0
        self.timeout = limits.timeout_factor * segment.duration + limits.timeout_margin

    def _measure(self, pose: Pose2D) -> float:
        if self.segment.axis == "linear":
            dx, dy = pose.x - self.start.x, pose.y - self.start.y
            along = dx * math.cos(self.start.yaw) + dy * math.sin(self.start.yaw)
            return self.segment.sign * along
        self._yaw_turned += wrap_angle(pose.yaw - self._last_yaw)
        self._last_yaw = pose.yaw
        return self.segment.sign * self._yaw_turned

    def progress_at(self, pose: Pose2D) -> float:
        """Distance (m) or angle (rad) covered in the segment's direction at ``pose``."""
        self._progress = self._measure(pose)
        return self._progress

    @property
    def progress(self) -> float:
        """Progress at the last pose seen."""
        return self._progress

    def _accel(self) -> float:
        linear = self.segment.axis == "linear"
        return self.limits.linear_acceleration if linear else self.limits.angular_acceleration

    def _top(self) -> float:
        linear = self.segment.axis == "linear"
        return self.limits.max_linear_speed if linear else self.limits.max_angular_speed

    def time_left(self) -> float:
        """Rough seconds to the goal at the current (or top) speed."""
        remaining = max(0.0, self.target - self._progress)
        return remaining / max(self._speed, 0.5 * self._top())

    def time_to_brake(self) -> float:
        """Rough seconds until the robot must start decelerating to stop at the goal."""
        a = self._accel()
        braking = self._speed ** 2 / (2.0 * a) if a > 0.0 else 0.0
        remaining = max(0.0, self.target - self._progress - braking)
        return remaining / max(self._speed, 0.5 * self._top())

    def extend(self, distance: float) -> None:
        """Move the goal ``distance`` further (and the timeout by that motion's duration)."""
        self.target += distance
        profile = TrapezoidProfile(distance, self._top(), self._accel())
        self.timeout += self.limits.timeout_factor * profile.duration

    def brake(self) -> None:
        """Put the goal where the robot can stop from its current speed (here when accel is 0)."""
        a = self._accel()
        self.target = self._progress + (self._speed ** 2 / (2.0 * a) if a > 0.0 else 0.0)

    def update(self, t: float, pose: Pose2D | None) -> tuple[Velocity, MotionOutcome]:
        """Command for the latest ``pose`` at ``t`` seconds into the segment."""
        if pose is None:
            raise MotionError("OdometryFollower.update needs a pose")
        self._t = t
        remaining = self.target - self.progress_at(pose)
        linear = self.segment.axis == "linear"
        tolerance = self.limits.position_tolerance if linear else self.limits.angle_tolerance
        if remaining <= tolerance:
            self._speed = 0.0
            return ZERO, MotionOutcome.DONE
        if t > self.timeout:
            self._speed = 0.0
            return ZERO, MotionOutcome.TIMEOUT
        floor = self.limits.min_linear_speed if linear else self.limits.min_angular_speed
        accel = self._accel()
        speed = self._top()
        if accel > 0.0:
            speed = min(speed, math.sqrt(2.0 * accel * remaining), accel * max(t, 0.0) + floor)
        self._speed = max(speed, floor)
        return self.segment.velocity(self._speed), MotionOutcome.RUNNING


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


def same_direction(a: MotionSegment, b: MotionSegment) -> bool:
    """Whether ``b`` continues ``a`` without a stop: same axis and same sign."""
    return a.axis == b.axis and a.sign == b.sign


class MotionChain:
    """Consecutive motion segments, executed back to back: the continuous motion of the navigator.

    :meth:`push` adds one action's segment. With ``blend``, a segment in the same direction as
    the last one extends the running motion (no deceleration in between); otherwise it waits
    until the running motion has decelerated to rest and starts at the next control tick, so
    the robot never stops longer than the direction change needs. :meth:`update` is one control
    tick: the command for the next ``dt`` seconds. :meth:`brake` drops what is queued and
    decelerates within the limits. A segment runs closed loop when a pose is given at its start
    (:func:`make_follower`), timed otherwise.

    ``steps_left`` counts the pushed segments not finished yet (an extended motion counts each
    segment it covers until its distance is passed), which is what a caller needs to keep at
    most one decision ahead of the robot.
    """

    def __init__(self, limits: MotionLimits, dt: float, blend: bool = True):
        if not dt > 0.0:
            raise MotionError(f"control interval must be > 0, got {dt!r}")
        self.limits, self.dt, self.blend = limits, dt, blend
        self.follower: TimedFollower | OdometryFollower | None = None
        self.pending: list[MotionSegment] = []
        self.braking = False
        self._ends: list[float] = []  # progress at which each segment of the follower ends
        self._tick = 0
        self._t0 = 0.0

    @property
    def active(self) -> bool:
        """Whether a motion is running or queued."""
        return self.follower is not None or bool(self.pending)

    @property
    def steps_left(self) -> int:
        """Segments pushed and not finished (the running one included)."""
        if self.follower is None:
            return len(self.pending)
        done = sum(1 for end in self._ends if end <= self.follower.progress + 1e-9)
        return max(1, len(self._ends) - done) + len(self.pending)

    @property
    def period(self) -> float:
        """Seconds between ticks.

        The running timed segment's ``dt`` (its commands are exact for that interval), else the
        chain's.
        """
        follower = self.follower
        return follower.dt if isinstance(follower, TimedFollower) else self.dt

    def time_left(self) -> float:
        """Planned seconds until every pushed segment has ended (0 when idle)."""
        left = self.follower.time_left() if self.follower is not None else 0.0
        return left + sum(s.duration for s in self.pending)

    def time_to_brake(self) -> float:
        """Seconds until the running motion starts its final deceleration (0 when idle).

        A same-direction segment pushed before then blends in at full speed.
        """
        return self.follower.time_to_brake() if self.follower is not None else 0.0

    def push(self, segment: MotionSegment, pose: Pose2D | None = None, now: float = 0.0) -> None:
        """Add one segment (``pose``: odometry for a closed-loop start; ``now``: clock, s)."""
        follower = self.follower
        if follower is None and not self.pending:
            self._start(segment, pose, now)
        elif (self.blend and follower is not None and not self.pending and not self.braking
              and same_direction(follower.segment, segment)):
            follower.extend(segment.target)
            self._ends.append(follower.target)
        else:
            self.pending.append(segment)

    def brake(self) -> None:
        """Drop the queued segments and decelerate the running one to rest within the limits."""
        self.pending.clear()
        if self.follower is not None:
            self.follower.brake()
            self._ends = [min(end, self.follower.target) for end in self._ends]
            self.braking = True

    def clear(self) -> None:
        """Forget everything at once (the caller has commanded a zero)."""
        self.follower, self.pending, self.braking, self._ends = None, [], False, []

    def _start(self, segment: MotionSegment, pose: Pose2D | None, now: float) -> None:
        self.follower = make_follower(segment, self.limits, self.dt, pose)
        self._ends = [segment.target]
        self._tick, self._t0 = 0, now
        self.braking = False

    def update(self, now: float, pose: Pose2D | None = None) -> tuple[Velocity, MotionOutcome]:
        """One control tick at ``now`` (clock seconds): the command and where the chain stands.

        RUNNING while a segment runs or is queued; DONE (with a zero) once all have ended;
        TIMEOUT (with a zero, the queue dropped) when a closed-loop segment gave up.
        """
        if self.follower is None:
            if not self.pending:
                return ZERO, MotionOutcome.DONE
            self._start(self.pending.pop(0), pose, now)
        while True:
            follower = self.follower
            t = now - self._t0 if follower.closed_loop else self._tick * follower.dt
            velocity, outcome = follower.update(t, pose)
            self._tick += 1
            if outcome == MotionOutcome.RUNNING:
                return velocity, outcome
            if outcome == MotionOutcome.TIMEOUT or not self.pending:
                self.clear()
                return ZERO, outcome
            self._start(self.pending.pop(0), pose, now)
