"""Continuous motion as a real navigator process: steps blend, soft stops ramp, e-stop is instant.

A constant MOVE_FORWARD policy with 0.1 m steps at 0.5 m/s (0.2 s each at cruise) and a
2 m/s^2 ramp: the next step is decided while the robot moves, so the speed stays at its maximum
across steps; a pause decelerates within 2 m/s^2; an e-stop zeroes in the same callback.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from nav_harness import NavigatorUnderTest, is_zero
from ros_harness import RosHarness, wait_until
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

PARAMS = dict(model="constant:MOVE_FORWARD", forward_distance=0.1, max_linear_speed=0.5,
              linear_acceleration=2.0, control_rate=50.0, max_steps=0, autostart=True,
              image_timeout=1.0)
DT = 1.0 / PARAMS["control_rate"]


@pytest.fixture(scope="module")
def harness():
    h = RosHarness("navigator_motion_test")
    yield h
    h.close()


def test_steps_blend_pause_ramps_down_estop_is_instant(harness):
    nav = NavigatorUnderTest(harness, "nav_cont", PARAMS)
    try:
        nav.instruction.publish(String(data="straight down the corridor"))
        nav.camera.start()
        assert wait_until(lambda: nav.state() == "active", 10.0), nav.proc.log()
        nav.wait_driving()
        cruise = nav.cmd.wait_for(lambda m: m.linear.x >= 0.5 - 1e-9, 3.0)
        assert cruise is not None, nav.proc.log()
        t0 = time.monotonic()
        first = nav.statuses()[-1].step
        time.sleep(1.5)
        window = nav.cmd.since(t0)
        steps = nav.statuses()[-1].step - first
        # ~7 steps of 0.2 s, and the robot never stopped nor slowed down between them
        assert steps >= 4, nav.proc.log()
        speeds = [m.linear.x for m in window]
        assert min(speeds) == pytest.approx(0.5), speeds
        assert len(window) >= 0.8 * 1.5 / DT  # a command every control period
        statuses = nav.statuses(since=t0)
        assert all(s.driving for s in statuses if s.step > first)

        # pause: a ramp down at <= 2 m/s^2, not an instant zero
        t1 = time.monotonic()
        assert harness.call(Trigger, f"{nav.node}/pause").success
        assert nav.wait_status(lambda s: s.stop_reason == "paused", 3.0, since=t1)
        zero = nav.cmd.wait_for(is_zero, 2.0, since=t1)
        assert zero is not None
        time.sleep(0.3)
        ramp = [m.linear.x for m in nav.cmd.since(t1)]
        stop_at = ramp.index(0.0)
        down = ramp[:stop_at]
        assert len(down) >= 0.5 / 2.0 / DT - 2  # 0.25 s of deceleration
        assert np.all(np.diff(down) <= 1e-12)
        assert np.abs(np.diff(down)).max() <= 2.0 * DT + 1e-6
        assert all(v == 0.0 for v in ramp[stop_at:]) and ramp.count(0.0) == 1  # one zero only
        status = nav.statuses()[-1]
        assert status.action == "" and not status.driving  # the cut step's action is cleared

        assert harness.call(Trigger, f"{nav.node}/resume").success
        nav.cmd.wait_for(lambda m: m.linear.x >= 0.5 - 1e-9, 3.0, since=time.monotonic())
        # e-stop: zero at once, no deceleration ramp
        t2 = time.monotonic()
        nav.estop.publish(Bool(data=True))
        zero = nav.cmd.wait_for(is_zero, 1.0, since=t2)
        assert zero is not None
        after = [m.linear.x for m in nav.cmd.since(t2)]
        first_zero = after.index(0.0)
        assert first_zero <= 1 and all(v >= 0.5 - 1e-9 for v in after[:first_zero])
        time.sleep(0.3)
        assert all(v == 0.0 for v in [m.linear.x for m in nav.cmd.since(t2)][first_zero:])
        nav.estop.publish(Bool(data=False))
        assert harness.call(Trigger, f"{nav.node}/resume").success
        nav.wait_driving()
    finally:
        nav.close()
