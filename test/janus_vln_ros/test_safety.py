"""The navigator's safety rules (pure logic, no rclpy): priorities, latches, holds, backoff."""

from __future__ import annotations

import pytest

from janus_vln_ros.safety import (
    ERROR,
    HOLD_REASONS,
    OK,
    SOFT_STOP_REASONS,
    WARN,
    LogLimiter,
    SafetyMonitor,
    StopReason,
    level,
)


def monitor(**kw) -> SafetyMonitor:
    m = SafetyMonitor(image_timeout=0.5, policy_error_retry=1.0, **kw)
    m.active = True
    m.set_instruction("go to the kitchen")
    m.image_received(10.0)
    return m


def test_safety_ok_and_staleness_holds_until_resume():
    m = monitor()
    assert m.evaluate(10.2) == (StopReason.NONE, "")
    reason, detail = m.evaluate(10.6)
    assert reason == StopReason.STALE_IMAGE and "0.60 s" in detail
    m.image_received(10.7)
    reason, detail = m.evaluate(10.8)  # frames are back, but a stale-camera stop holds
    assert reason == StopReason.HOLD and "~/resume" in detail and "stale_image" in detail
    m.resume()
    assert m.evaluate(10.8)[0] == StopReason.NONE


def test_stale_camera_without_require_resume_recovers_on_its_own():
    m = monitor(require_resume=False)
    assert m.evaluate(10.6)[0] == StopReason.STALE_IMAGE
    m.image_received(10.7)
    assert m.evaluate(10.8)[0] == StopReason.NONE


def test_new_instruction_releases_a_hold_but_not_a_pause():
    m = monitor()
    m.evaluate(10.6)
    m.image_received(10.7)
    assert m.evaluate(10.8)[0] == StopReason.HOLD
    m.paused = True
    m.set_instruction("next room")
    assert m.hold is None and m.evaluate(10.8)[0] == StopReason.PAUSED
    m.resume()
    assert m.evaluate(10.8)[0] == StopReason.NONE


def test_no_hold_when_the_robot_was_not_allowed_to_drive():
    m = SafetyMonitor(image_timeout=0.5)
    m.active = True
    m.image_received(1.0)
    assert m.evaluate(5.0)[0] == StopReason.NO_INSTRUCTION  # camera stale, nothing to do
    m.set_instruction("x")
    m.image_received(5.0)
    assert m.evaluate(5.1)[0] == StopReason.NONE
    m.paused = True
    m.image_received(6.0)
    assert m.evaluate(9.0)[0] == StopReason.PAUSED and m.hold is None


def test_estop_latches_and_its_release_holds():
    m = monitor()
    assert m.set_estop(True) and not m.set_estop(True)  # a repeat changes nothing
    assert m.evaluate(10.1)[0] == StopReason.ESTOP
    m.resume()  # resume does not release an engaged e-stop
    assert m.evaluate(10.1)[0] == StopReason.ESTOP
    m.set_instruction("another")  # nor does an instruction
    assert m.evaluate(10.1)[0] == StopReason.ESTOP
    assert m.set_estop(False)
    assert m.evaluate(10.1)[0] == StopReason.HOLD
    m.resume()
    assert m.evaluate(10.1)[0] == StopReason.NONE
    m.set_estop(True)
    m.set_estop(False)
    m.set_instruction("a new instruction after the release")
    assert m.evaluate(10.1)[0] == StopReason.NONE
    free = monitor(require_resume=False)
    free.set_estop(True)
    free.set_estop(False)
    assert free.evaluate(10.1)[0] == StopReason.NONE


def test_configure_keeps_latches():
    m = monitor()
    m.set_estop(True)
    m.paused = True
    m.configure(image_timeout=2.0, policy_error_retry=0.5, require_resume=False)
    assert m.estop and m.paused and m.image_timeout == 2.0 and not m.require_resume
    with pytest.raises(ValueError, match="odom_timeout must be a finite number >= 0"):
        m.configure(odom_timeout=float("nan"))
    with pytest.raises(ValueError, match="unknown safety setting"):
        m.configure(speed=1.0)


def test_no_image_and_bad_image():
    m = SafetyMonitor(image_timeout=0.5, require_resume=False)
    m.active = True
    m.set_instruction("x")
    assert m.evaluate(0.0)[0] == StopReason.NO_IMAGE
    m.image_rejected(1.0, "encoding: unsupported")
    reason, detail = m.evaluate(1.1)
    assert reason == StopReason.BAD_IMAGE and "encoding" in detail
    assert m.evaluate(2.0)[0] == StopReason.NO_IMAGE  # the bad frame is old too
    m.image_received(2.0)
    assert m.image_error == ""
    m.image_rejected(2.1, "data: truncated")
    assert m.evaluate(2.2)[0] == StopReason.NONE  # a valid frame is still fresh
    assert m.evaluate(2.55)[0] == StopReason.BAD_IMAGE
    m.image_received(2.6)
    assert m.image_error == ""  # cleared on recovery


def test_priorities():
    m = monitor()
    m.paused = True
    assert m.evaluate(10.1)[0] == StopReason.PAUSED
    m.end_episode(StopReason.EPISODE_DONE)
    assert m.evaluate(10.1)[0] == StopReason.EPISODE_DONE
    m.policy_failed(10.0, "RuntimeError: boom")
    reason, detail = m.evaluate(10.1)
    assert reason == StopReason.POLICY_ERROR and detail.startswith("policy raised: RuntimeError")
    assert m.evaluate(30.0)[0] == StopReason.POLICY_ERROR  # until a step succeeds
    m.policy_succeeded()
    assert m.evaluate(10.1)[0] == StopReason.EPISODE_DONE
    m.estop = True
    assert m.evaluate(10.1)[0] == StopReason.ESTOP
    m.active = False
    assert m.evaluate(10.1)[0] == StopReason.INACTIVE
    m.shutdown = True
    assert m.evaluate(10.1)[0] == StopReason.SHUTDOWN


def test_policy_fault_backs_off_exponentially_and_logs_each_error_once():
    m = monitor(policy_error_retry_max=5.0)
    now = 10.0
    assert m.policy_failed(now, "RuntimeError: boom")  # new: log it
    delays = []
    for _ in range(6):
        m.image_received(m.policy_retry_at - 0.1)  # the camera keeps streaming
        assert not m.may_step(m.policy_retry_at - 1e-3)
        assert m.may_step(m.policy_retry_at)  # a retry is allowed once the backoff is over
        delays.append(round(m.policy_retry_at - now, 6))
        now = m.policy_retry_at
        assert not m.policy_failed(now, "RuntimeError: boom")  # the same error: not again
    delays.append(round(m.policy_retry_at - now, 6))
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    assert m.policy_failed(now, "ValueError: other")  # a different error is logged
    m.policy_succeeded()
    assert not m.policy_faulted and m.policy_error == ""
    assert m.policy_failed(now, "RuntimeError: boom")  # a new fault logs again


def test_may_step_needs_everything_else_ok():
    m = monitor()
    m.policy_failed(10.0, "x")
    m.paused = True
    assert not m.may_step(20.0)
    m.resume()
    m.image_received(20.0)
    assert m.may_step(20.0)


def test_instruction_rules():
    m = monitor()
    m.end_episode(StopReason.STOPPED)
    assert m.evaluate(10.1)[0] == StopReason.STOPPED
    assert m.set_instruction("  next room  ") and m.instruction == "next room"
    assert m.evaluate(10.1)[0] == StopReason.NONE  # a new instruction clears the episode end
    assert not m.set_instruction("   ")
    assert m.evaluate(10.1)[0] == StopReason.NO_INSTRUCTION
    with pytest.raises(ValueError, match="does not end an episode"):
        m.end_episode(StopReason.ESTOP)


def test_odometry_requirement():
    m = monitor(odom_timeout=0.2, require_odometry=True)
    assert m.evaluate(10.1)[0] == StopReason.NO_ODOMETRY
    m.odom_received(10.05)
    assert m.evaluate(10.1)[0] == StopReason.NONE
    assert m.evaluate(10.3)[0] == StopReason.NO_ODOMETRY


def test_levels_classes_and_limiter():
    assert level(StopReason.NONE) == OK
    assert level(StopReason.STALE_IMAGE) == WARN and level(StopReason.HOLD) == WARN
    assert level(StopReason.POLICY_ERROR) == ERROR
    assert {level(r) for r in StopReason} <= {OK, WARN, ERROR}
    assert StopReason.PAUSED in SOFT_STOP_REASONS and StopReason.STOPPED in SOFT_STOP_REASONS
    assert StopReason.ESTOP not in SOFT_STOP_REASONS
    assert not SOFT_STOP_REASONS & HOLD_REASONS
    limiter = LogLimiter(period=5.0)
    assert limiter.allow("a", 0.0) and not limiter.allow("a", 1.0)
    assert limiter.allow("b", 1.0)  # a different error is not hidden
    assert limiter.allow("a", 5.5)
    with pytest.raises(ValueError, match="image_timeout"):
        SafetyMonitor(image_timeout=-1.0)
