"""Pure-Python tests (no rclpy spinning): motion segments and chains, params, policy specs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from janus_core.actions import Action
from janus_core.baselines import ConstantPolicy
from janus_core.interface import Observation
from janus_vln_ros.motion import (
    ZERO,
    MotionChain,
    MotionError,
    MotionLimits,
    MotionOutcome,
    OdometryFollower,
    Pose2D,
    TimedFollower,
    TrapezoidProfile,
    make_follower,
    plan_motion,
    wrap_angle,
    yaw_from_quaternion,
)
from janus_vln_ros.params import (
    DEFAULTS,
    PARAMETER_NAMES,
    NavigatorConfigError,
    NavigatorParams,
    load_params_file,
    validate_values,
)
from janus_vln_ros.policy_factory import PolicySpecError, make_policy

LIMITS = MotionLimits()


# ---------------------------------------------------------------- profiles and segments
@pytest.mark.parametrize("distance, vmax, accel", [
    (0.25, 0.25, 0.5),     # trapezoid
    (0.25, 1.0, 0.5),      # triangle: too short to reach vmax
    (0.25, 0.25, 0.0),     # rectangle
    (math.radians(15), 0.5, 1.5),
])
def test_profile_covers_distance_within_limits(distance, vmax, accel):
    p = TrapezoidProfile(distance, vmax, accel)
    ts = np.linspace(0, p.duration, 2001)
    v = np.array([p.velocity(t) for t in ts])
    assert v.max() <= vmax + 1e-12
    assert p.position(p.duration) == pytest.approx(distance)
    # the integral of the speed is the distance
    assert np.trapezoid(v, ts) == pytest.approx(distance, rel=2e-3)
    if accel:
        assert np.all(np.abs(np.diff(v)) <= accel * (ts[1] - ts[0]) + 1e-9)
    assert p.velocity(-0.1) == 0.0 and p.velocity(p.duration + 0.1) == 0.0


def test_profile_known_numbers():
    p = TrapezoidProfile(0.25, 0.25, 0.5)  # 0.5 s ramps cover 0.125 m, 0.5 s cruise
    assert p.ramp_time == pytest.approx(0.5)
    assert p.duration == pytest.approx(1.5)
    tri = TrapezoidProfile(0.25, 1.0, 0.5)
    assert tri.peak_speed == pytest.approx(math.sqrt(0.25 * 0.5))
    assert TrapezoidProfile(0.25, 0.25, 0.0).duration == pytest.approx(1.0)


def test_plan_motion_per_action():
    assert plan_motion(Action.STOP, LIMITS) is None
    fwd = plan_motion(Action.MOVE_FORWARD, LIMITS)
    assert (fwd.axis, fwd.sign, fwd.target) == ("linear", 1, 0.25)
    left = plan_motion(Action.TURN_LEFT, LIMITS)
    right = plan_motion(Action.TURN_RIGHT, LIMITS)
    assert left.axis == right.axis == "angular"
    assert left.sign == 1 and right.sign == -1  # REP 103: +z is counter-clockwise
    assert left.target == pytest.approx(math.radians(15))
    assert left.velocity(0.3).angular == 0.3 and right.velocity(0.3).angular == -0.3


@pytest.mark.parametrize("action", [Action.MOVE_FORWARD, Action.TURN_LEFT, Action.TURN_RIGHT])
@pytest.mark.parametrize("rate", [10.0, 20.0, 33.0])
def test_timed_follower_zero_order_hold_is_exact(action, rate):
    seg = plan_motion(action, LIMITS)
    follower = TimedFollower(seg, 1.0 / rate)
    covered, k, commands = 0.0, 0, []
    while True:
        cmd, outcome = follower.update(k / rate)
        commands.append(cmd)
        if outcome == MotionOutcome.DONE:
            break
        covered += (cmd.linear if seg.axis == "linear" else cmd.angular) / rate
        k += 1
    assert commands[-1] == ZERO
    assert covered == pytest.approx(seg.sign * seg.target, abs=1e-12)
    top = LIMITS.max_linear_speed if seg.axis == "linear" else LIMITS.max_angular_speed
    for c in commands:
        assert abs(c.linear) <= top + 1e-12 and abs(c.angular) <= top + 1e-12
        assert (c.angular == 0.0) if seg.axis == "linear" else (c.linear == 0.0)
    assert k == math.ceil(seg.duration * rate - 1e-9)


def simulate_odometry(follower, start: Pose2D, rate=50.0, lag=0.0, stuck=False, t_max=30.0):
    """A kinematic unicycle that follows the commands (optionally stuck)."""
    pose, t, last = start, 0.0, ZERO
    dt = 1.0 / rate
    while t < t_max:
        cmd, outcome = follower.update(t, pose)
        if outcome != MotionOutcome.RUNNING:
            return pose, outcome, t
        if not stuck:
            v = cmd if lag == 0 else last
            pose = Pose2D(pose.x + v.linear * dt * math.cos(pose.yaw),
                          pose.y + v.linear * dt * math.sin(pose.yaw),
                          wrap_angle(pose.yaw + v.angular * dt))
        last, t = cmd, t + dt
    raise AssertionError("follower never finished")


@pytest.mark.parametrize("yaw0", [0.0, 1.0, math.pi - 0.05, -math.pi + 0.05])
def test_odometry_follower_reaches_goal(yaw0):
    start = Pose2D(1.0, -2.0, yaw0)
    fwd = plan_motion(Action.MOVE_FORWARD, LIMITS)
    pose, outcome, _ = simulate_odometry(OdometryFollower(fwd, start, LIMITS), start)
    assert outcome == MotionOutcome.DONE
    travelled = math.hypot(pose.x - start.x, pose.y - start.y)
    assert abs(travelled - 0.25) <= LIMITS.position_tolerance + 0.02 * 0.25
    for action, sign in ((Action.TURN_LEFT, 1), (Action.TURN_RIGHT, -1)):
        seg = plan_motion(action, LIMITS)
        pose, outcome, _ = simulate_odometry(OdometryFollower(seg, start, LIMITS), start)
        turned = wrap_angle(pose.yaw - start.yaw)  # crosses +-pi for yaw0 near pi
        assert outcome == MotionOutcome.DONE
        assert abs(turned - sign * math.radians(15)) <= LIMITS.angle_tolerance + 0.01


def test_odometry_follower_large_turn_and_limits():
    limits = MotionLimits(turn_angle=math.radians(270))
    seg = plan_motion(Action.TURN_LEFT, limits)
    follower = OdometryFollower(seg, Pose2D(0, 0, 0), limits)
    pose, outcome, _ = simulate_odometry(follower, Pose2D(0, 0, 0))
    assert outcome == MotionOutcome.DONE
    assert wrap_angle(pose.yaw - math.radians(270)) == pytest.approx(0, abs=0.03)
    f = OdometryFollower(plan_motion(Action.MOVE_FORWARD, LIMITS), Pose2D(0, 0, 0), LIMITS)
    for t in np.linspace(0, 3, 31):
        cmd, _ = f.update(float(t), Pose2D(0.0, 0.0, 0.0))
        assert LIMITS.min_linear_speed <= cmd.linear <= LIMITS.max_linear_speed


def test_odometry_follower_times_out_when_stuck():
    start = Pose2D(0, 0, 0)
    seg = plan_motion(Action.MOVE_FORWARD, LIMITS)
    follower = OdometryFollower(seg, start, LIMITS)
    _, outcome, t = simulate_odometry(follower, start, stuck=True)
    assert outcome == MotionOutcome.TIMEOUT
    expected = LIMITS.timeout_factor * seg.duration + LIMITS.timeout_margin
    assert t == pytest.approx(expected, abs=0.05)


def test_odometry_follower_stops_on_overshoot():
    seg = plan_motion(Action.MOVE_FORWARD, LIMITS)
    follower = OdometryFollower(seg, Pose2D(0, 0, 0), LIMITS)
    cmd, outcome = follower.update(0.5, Pose2D(0.4, 0.0, 0.0))
    assert outcome == MotionOutcome.DONE and cmd == ZERO


def test_make_follower_picks_mode():
    seg = plan_motion(Action.MOVE_FORWARD, LIMITS)
    assert isinstance(make_follower(seg, LIMITS, 0.05, None), TimedFollower)
    assert isinstance(make_follower(seg, LIMITS, 0.05, Pose2D(0, 0, 0)), OdometryFollower)
    with pytest.raises(MotionError):
        OdometryFollower(seg, Pose2D(0, 0, 0), LIMITS).update(0.0, None)


def test_profile_from_a_start_speed():
    # cruising at 0.25 m/s with 0.5 m left: no acceleration phase, stop at the end
    p = TrapezoidProfile(0.5, 0.25, 0.5, start_speed=0.25)
    assert p.velocity(0.0) == pytest.approx(0.25) and p.peak_speed == pytest.approx(0.25)
    assert p.duration == pytest.approx(0.5 / 0.25 + 0.5 * 0.25 / 0.5)  # cruise + half a ramp
    assert p.position(p.duration) == pytest.approx(0.5)
    # faster than max_speed (limits lowered meanwhile): slow down to it first
    slow = TrapezoidProfile(1.0, 0.2, 0.5, start_speed=0.4)
    assert slow.velocity(0.0) == pytest.approx(0.4) and slow.velocity(0.41) == pytest.approx(0.2)
    # a pure stop: exactly the braking distance
    stop = TrapezoidProfile(0.0625, 0.25, 0.5, start_speed=0.25)
    assert stop.duration == pytest.approx(0.5) and stop.position(0.5) == pytest.approx(0.0625)
    # too short to stop at the configured rate: stops there, decelerating harder
    hard = TrapezoidProfile(0.01, 0.25, 0.5, start_speed=0.25)
    assert hard.duration == pytest.approx(0.08) and hard.position(1.0) == pytest.approx(0.01)
    ts = np.linspace(0, p.duration, 4001)
    assert np.trapezoid([p.velocity(t) for t in ts], ts) == pytest.approx(0.5, rel=1e-3)


def drive(chain: MotionChain, ticks: int, axis="linear", now0=0.0):
    """Tick a chain; the commands and the distance they integrate to on ``axis``."""
    commands = []
    for k in range(ticks):
        cmd, outcome = chain.update(now0 + k * chain.dt)
        commands.append(cmd)
        if outcome != MotionOutcome.RUNNING:
            break
    covered = sum(getattr(c, axis) for c in commands) * chain.dt
    return commands, covered


def test_chain_blends_same_direction_without_stopping():
    dt = 0.05
    chain = MotionChain(LIMITS, dt)
    fwd = plan_motion(Action.MOVE_FORWARD, LIMITS)
    chain.push(fwd)
    commands = [chain.update(0.0)[0]]
    while len(commands) < 15:  # 0.75 s into the 1.5 s step, push the next one
        commands.append(chain.update(len(commands) * dt)[0])
    assert chain.steps_left == 1
    assert chain.time_to_brake() == pytest.approx(1.0 - 15 * dt)  # cruise ends at 1.0 s
    chain.push(fwd)
    assert chain.steps_left == 2
    more, _ = drive(chain, 400, now0=15 * dt)
    commands += more
    speeds = [c.linear for c in commands]
    assert speeds[-1] == 0.0 and all(s > 0 for s in speeds[:-1])  # no stop in between
    assert max(speeds) <= LIMITS.max_linear_speed + 1e-12
    assert sum(speeds) * dt == pytest.approx(0.5, abs=1e-12)  # exactly two steps
    # two separate steps take 2 x 1.5 s; blended: 0.5 m at 0.25 m/s plus one ramp up and down
    assert len(commands) * dt == pytest.approx(2.5, abs=2 * dt)
    assert not chain.active and chain.steps_left == 0
    diffs = np.abs(np.diff(speeds[:-1]))
    assert diffs.max() <= LIMITS.linear_acceleration * dt + 1e-9


def test_chain_direction_change_decelerates_then_turns():
    dt = 0.05
    chain = MotionChain(LIMITS, dt)
    chain.push(plan_motion(Action.MOVE_FORWARD, LIMITS))
    first, _ = chain.update(0.0)
    chain.push(plan_motion(Action.TURN_LEFT, LIMITS))
    assert chain.steps_left == 2 and chain.time_left() > 1.5
    commands, _ = drive(chain, 400, now0=dt)
    commands.insert(0, first)
    linear = [c.linear for c in commands]
    angular = [c.angular for c in commands]
    assert all(c.linear == 0.0 or c.angular == 0.0 for c in commands)  # never both
    first_turn = next(i for i, a in enumerate(angular) if a != 0.0)
    assert all(v == 0.0 for v in linear[first_turn:])
    assert linear[first_turn - 1] > 0.0  # the turn follows the last forward command directly
    assert sum(linear) * dt == pytest.approx(0.25, abs=1e-12)
    assert sum(angular) * dt == pytest.approx(math.radians(15), abs=1e-12)


def test_chain_brake_decelerates_within_limits():
    dt = 0.05
    chain = MotionChain(LIMITS, dt)
    fwd = plan_motion(Action.MOVE_FORWARD, LIMITS)
    chain.push(fwd)
    speeds = [chain.update(k * dt)[0].linear for k in range(12)]  # cruising at 0.25 m/s
    chain.push(fwd)
    chain.brake()
    assert not chain.pending and chain.braking
    rest, _ = drive(chain, 100, now0=12 * dt)
    tail = [c.linear for c in rest]
    assert tail[-1] == 0.0
    # from 0.25 m/s at 0.5 m/s^2: 0.5 s, never faster than the deceleration limit allows
    assert len(tail) - 1 == pytest.approx(0.5 / dt, abs=1)
    assert np.all(np.diff([speeds[-1], *tail]) <= 1e-12)
    assert np.abs(np.diff([speeds[-1], *tail[:-1]])).max() <= 0.5 * dt + 1e-9
    covered = (sum(speeds) + sum(tail)) * dt
    assert covered < 0.25  # the step was cut short, not finished
    instant = MotionChain(MotionLimits(linear_acceleration=0.0), dt)
    instant.push(plan_motion(Action.MOVE_FORWARD, MotionLimits(linear_acceleration=0.0)))
    instant.update(0.0)
    instant.brake()
    assert instant.update(dt) == (ZERO, MotionOutcome.DONE)  # accel 0: stop at once


def test_chain_without_blend_and_closed_loop_extension():
    dt = 0.05
    chain = MotionChain(LIMITS, dt, blend=False)
    fwd = plan_motion(Action.MOVE_FORWARD, LIMITS)
    chain.push(fwd)
    chain.update(0.0)
    chain.push(fwd)
    assert chain.pending  # queued, not blended
    # closed loop: a unicycle integrating the commands; the goal moves with the extension
    chain = MotionChain(LIMITS, 0.02)
    pose = Pose2D(0.0, 0.0, 0.0)
    chain.push(fwd, pose=pose, now=0.0)
    t, pushed, stopped = 0.0, False, False
    while True:
        cmd, outcome = chain.update(t, pose)
        if outcome != MotionOutcome.RUNNING:
            break
        if not pushed and pose.x > 0.1:
            chain.push(fwd)
            pushed = True
        stopped |= pushed and cmd.linear == 0.0
        pose = Pose2D(pose.x + cmd.linear * 0.02, 0.0, 0.0)
        t += 0.02
    assert outcome == MotionOutcome.DONE and not stopped
    assert pose.x == pytest.approx(0.5, abs=LIMITS.position_tolerance + 0.005)


@pytest.mark.parametrize("field, value, text", [
    ("forward_distance", 0.0, "forward_distance must be a finite number > 0"),
    ("max_linear_speed", float("nan"), "max_linear_speed"),
    ("linear_acceleration", -1.0, "linear_acceleration must be a finite number >= 0"),
    ("min_angular_speed", 5.0, "min_angular_speed (5.0) exceeds max_angular_speed"),
    ("timeout_factor", 0.5, "timeout_factor must be >= 1"),
])
def test_motion_limits_validation(field, value, text):
    with pytest.raises(MotionError, match=text.replace("(", r"\(").replace(")", r"\)")):
        MotionLimits(**{field: value})


def test_yaw_from_quaternion():
    for yaw in (0.0, 0.3, -2.0, 3.0):
        q = (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))
        assert yaw_from_quaternion(*q) == pytest.approx(yaw)


# ---------------------------------------------------------------- parameters
def test_params_defaults_and_conversion():
    p = NavigatorParams()
    assert p.forward_distance == 0.25 and p.turn_angle == 15.0
    limits = p.motion_limits()
    assert limits.turn_angle == pytest.approx(math.radians(15.0))
    assert NavigatorParams(control_rate=30).control_rate == 30.0  # int accepted for a float
    assert set(DEFAULTS) == set(PARAMETER_NAMES)


@pytest.mark.parametrize("changes, text", [
    ({"image_transport": "theora"}, "parameter image_transport: 'theora' is not one of"),
    ({"max_linear_speed": 9.0}, "parameter max_linear_speed: 9.0 is outside the allowed range"),
    ({"max_steps": 1.5}, "parameter max_steps: expected int, got float"),
    ({"autostart": "yes"}, "parameter autostart: expected bool"),
    ({"image_timeout": float("inf")}, "parameter image_timeout: must be finite"),
    ({"min_linear_speed": 0.3, "max_linear_speed": 0.2}, "min_linear_speed (0.3) exceeds"),
    ({"warp_drive": True}, "unknown navigator parameter"),
])
def test_params_errors_name_the_parameter(changes, text):
    with pytest.raises(NavigatorConfigError) as info:
        NavigatorParams().replace(**changes)
    assert text in str(info.value)


def test_validate_values_and_params_file(tmp_path):
    validate_values({"image_timeout": 1.0})
    with pytest.raises(NavigatorConfigError, match="image_qos"):
        validate_values({"image_qos": "fast"})
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    model: tiny\n")
    assert load_params_file(path) == {"model": "tiny"}
    path.write_text("other:\n  ros__parameters: {}\n")
    with pytest.raises(NavigatorConfigError, match="no 'navigator: ros__parameters:' block"):
        load_params_file(path)


# ---------------------------------------------------------------- policy specs
def test_policy_factory_specs():
    obs = Observation(rgb=np.zeros((4, 4, 3), np.uint8))
    assert type(make_policy("random")).__name__ == "RandomPolicy"
    assert make_policy("forward").act(obs).action == Action.MOVE_FORWARD
    p = make_policy("constant:TURN_RIGHT:0.01:fail=2")
    assert isinstance(p, ConstantPolicy) and p.delay_s == 0.01
    p.reset("x")
    result = p.act(obs)
    assert result.action == Action.TURN_RIGHT and result.timings["constant"] >= 0.01
    with pytest.raises(RuntimeError, match="scripted failure at step 2"):
        p.act(obs)
    assert p.act(obs).action == Action.TURN_RIGHT
    down = make_policy("constant:STOP:down=2")
    down.reset("x")
    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"^policy unavailable \(scripted outage\)$"):
            down.act(obs)
    assert down.act(obs).action == Action.STOP


@pytest.mark.parametrize("spec, text", [
    ("", "model is empty"),
    ("constant", "expected constant:<ACTION>"),
    ("constant:JUMP", "unknown action name 'JUMP'"),
    ("constant:STOP:soon", "neither a delay in seconds nor fail="),
    ("constant:STOP:-1", "delay must be >= 0"),
    ("constant:STOP:fail=x", "fail= needs comma-separated step numbers"),
    ("constant:STOP:down=x", "down= needs a number of calls"),
])
def test_policy_factory_errors(spec, text):
    with pytest.raises(PolicySpecError, match=text.replace("(", r"\(")):
        make_policy(spec)
