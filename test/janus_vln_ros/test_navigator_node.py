"""The navigator as a real process over DDS: lifecycle, driving, safety stops, bad input, SIGINT.

Each node process runs in its own namespace so that the processes of this module never hear
each other. Images are small (32x24) except in the one 640x480 test, which needs the Fast DDS
SHM profile that conftest.py points FASTDDS_DEFAULT_PROFILES_FILE at.
"""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist
from nav_harness import (
    SMALL,
    NavigatorUnderTest,
    complete_runs,
    frame,
    is_zero,
    set_param,
)
from rclpy.parameter import Parameter
from ros_harness import RosHarness, qos, start_navigator, wait_until
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from janus_vln_ros.conversions import numpy_to_compressed, numpy_to_image
from janus_vln_ros.navigator_node import NavigatorNode
from janus_vln_ros.status import NavigatorStatus


@pytest.fixture(scope="module")
def harness():
    h = RosHarness("navigator_test")
    yield h
    h.close()


A_PARAMS = dict(
    model="constant:MOVE_FORWARD", forward_distance=0.05, max_linear_speed=0.5,
    linear_acceleration=0.0, control_rate=50.0, image_timeout=0.4, max_steps=0,
    depth_topic="camera/depth", continuous_motion=False,  # one run of commands per step
)


@pytest.fixture(scope="module")
def nav_a(harness):
    nav = NavigatorUnderTest(harness, "nav_a", A_PARAMS)
    yield nav
    nav.close()


def ensure_active(nav: NavigatorUnderTest):
    state = nav.state()
    if state == "unconfigured":
        assert nav.transition("configure"), nav.proc.log()
        state = "inactive"
    if state == "inactive":
        assert nav.transition("activate"), nav.proc.log()
    if not any(s.instruction for s in nav.statuses()):  # run alone (-k): no earlier test
        nav.instruction.publish(String(data="walk forward to the door"))


def test_lifecycle_transitions(nav_a):
    nav = nav_a
    assert nav.state() == "unconfigured"
    nav.instruction.publish(String(data="walk forward to the door"))
    nav.camera.start()
    time.sleep(0.5)
    assert nav.cmd.messages == [], "an unconfigured navigator must not command the robot"

    assert nav.transition("configure")
    assert nav.state() == "inactive"
    time.sleep(0.5)
    assert all(is_zero(m) for m in nav.cmd.messages), "inactive navigator commanded motion"

    assert nav.transition("activate")
    assert nav.state() == "active"
    nav.wait_driving()
    assert nav.actions.wait_for(lambda m: m.data == "MOVE_FORWARD", 5) is not None

    t_deactivate = time.monotonic()
    assert nav.transition("deactivate")
    assert nav.state() == "inactive"
    zero = nav.cmd.wait_for(is_zero, 2.0, since=t_deactivate)
    assert zero is not None, "deactivate did not publish a zero"
    time.sleep(0.4)
    after = nav.cmd.since(t_deactivate)
    assert after and is_zero(after[-1])
    assert all(is_zero(m) for m in nav.cmd.since(time.monotonic() - 0.3))
    status = nav.wait_status(lambda s: s.stop_reason == "inactive", since=t_deactivate)
    assert status is not None and status.state == "inactive"

    assert nav.transition("activate")
    nav.wait_driving()  # resumes the same episode

    assert nav.transition("deactivate")
    t_cleanup = time.monotonic()
    assert nav.transition("cleanup")
    assert nav.state() == "unconfigured"
    assert nav.proc.wait_for_log("cleanup: robot stopped, policy released")
    time.sleep(0.3)
    assert all(is_zero(m) for m in nav.cmd.since(t_cleanup))

    # configure again: the policy is rebuilt and the latched instruction arrives again
    assert nav.transition("configure")
    assert nav.transition("activate")
    nav.wait_driving()
    assert nav.proc.alive()


def test_actions_and_matching_velocities(nav_a):
    nav = nav_a
    ensure_active(nav)
    nav.camera.start()
    t0 = nav.wait_driving()
    wait_until(lambda: len(nav.actions.since(t0)) >= 4, 8)
    time.sleep(0.3)
    actions = [m.data for m in nav.actions.since(t0)]
    assert len(actions) >= 4 and set(actions) == {"MOVE_FORWARD"}
    twists = nav.cmd.since(t0)
    assert all(t.angular.z == 0.0 for t in twists)
    assert all(0.0 <= t.linear.x <= A_PARAMS["max_linear_speed"] + 1e-9 for t in twists)
    complete = complete_runs(twists)
    assert len(complete) >= 3
    dt = 1.0 / A_PARAMS["control_rate"]
    for run in complete:
        # zero-order hold: the commands of one step integrate to forward_distance
        assert sum(run) * dt == pytest.approx(A_PARAMS["forward_distance"], abs=1e-9)
    status = nav.wait_status(lambda s: s.step > 0 and s.action == "MOVE_FORWARD", since=t0)
    assert status is not None and status.stop_reason == "none"
    for stage in ("convert", "wait", "policy", "command", "receive_to_command", "overhead"):
        assert stage in status.latency_ms, status.latency_ms


def test_runtime_parameter_validation(harness, nav_a):
    ok = set_param(harness, nav_a.node, "max_linear_speed", 0.4)
    assert ok.successful, ok.reason
    bad = set_param(harness, nav_a.node, "max_linear_speed", 50.0)  # descriptor range
    assert not bad.successful
    assert "max_linear_speed" in bad.reason or "range" in bad.reason.lower()
    cross = set_param(harness, nav_a.node, "max_linear_speed", 0.01)  # below min_linear_speed
    assert not cross.successful
    assert "min_linear_speed (0.02) exceeds max_linear_speed (0.01)" in cross.reason
    assert set_param(harness, nav_a.node, "max_linear_speed", 0.5).successful


def test_stale_images_stop_within_timeout(harness, nav_a):
    nav = nav_a
    ensure_active(nav)
    # one long motion (2 s), so only the watchdog can stop the robot early
    assert set_param(harness, nav.node, "forward_distance", 1.0).successful
    try:
        nav.camera.start()
        nav.wait_driving()
        time.sleep(0.2)
        nav.camera.pause()
        t_stop = time.monotonic()
        status = nav.wait_status(lambda s: s.stop_reason == "stale_image", 3.0, since=t_stop)
        assert status is not None, nav.proc.log()
        timed = nav.cmd.timed_since(t_stop)
        zeros = [t for t, m in timed if is_zero(m)]
        assert zeros, "no zero after the camera stopped"
        timeout = A_PARAMS["image_timeout"]
        # the robot was mid-motion (1 s left); the zero comes from the watchdog
        assert zeros[0] - t_stop < timeout + 0.5
        time.sleep(0.3)
        assert is_zero(nav.cmd.last())
        assert all(is_zero(m) for m in nav.cmd.since(zeros[0] + 0.05))
        diag = harness.record(DiagnosticArray, "/diagnostics")
        got = diag.wait_for(lambda m: any(
            s.name.startswith(nav.node) and "stale_image" in s.message for s in m.status), 3.0)
        assert got is not None
        assert got.status[0].level == DiagnosticStatus.WARN
    finally:
        assert set_param(harness, nav.node, "forward_distance", 0.05).successful
    # inputs return: the robot holds until ~/resume (require_resume, the default)
    t_back = time.monotonic()
    nav.camera.start()
    held = nav.wait_status(lambda s: s.stop_reason == "hold", 3.0, since=t_back)
    assert held is not None and "~/resume" in held.detail, nav.proc.log()
    time.sleep(0.5)
    assert all(is_zero(m) for m in nav.cmd.since(t_back))
    assert harness.call(Trigger, f"{nav.node}/resume").success
    nav.wait_driving()
    assert nav.wait_status(lambda s: s.stop_reason == "none", since=time.monotonic() - 1)
    # require_resume false: the robot drives again as soon as frames are back
    assert set_param(harness, nav.node, "require_resume", False).successful
    try:
        nav.camera.pause()
        t_stop = time.monotonic()
        assert nav.wait_status(lambda s: s.stop_reason == "stale_image", 3.0, since=t_stop)
        nav.camera.start()
        nav.wait_driving()
    finally:
        assert set_param(harness, nav.node, "require_resume", True).successful


def test_estop_stops_and_releases(nav_a):
    nav = nav_a
    ensure_active(nav)
    nav.camera.start()
    nav.wait_driving()
    t0 = time.monotonic()
    nav.estop.publish(Bool(data=True))
    assert nav.wait_status(lambda s: s.stop_reason == "estop", 3.0, since=t0)
    assert nav.cmd.wait_for(is_zero, 1.0, since=t0)
    time.sleep(0.5)
    held = nav.cmd.since(time.monotonic() - 0.4)
    assert all(is_zero(m) for m in held)
    assert is_zero(nav.cmd.last())
    t_release = time.monotonic()
    nav.estop.publish(Bool(data=False))
    assert nav.wait_status(lambda s: s.stop_reason == "hold", 3.0, since=t_release)
    assert nav.proc.wait_for_log("e-stop released: call ~/resume or send a new instruction")
    time.sleep(0.3)
    assert all(is_zero(m) for m in nav.cmd.since(t_release))
    assert nav.harness.call(Trigger, f"{nav.node}/resume").success
    nav.wait_driving()


def test_instruction_episodes_and_empty_instruction(nav_a):
    nav = nav_a
    ensure_active(nav)
    nav.camera.start()
    before = nav.wait_status(lambda s: s.episode > 0, since=0.0)
    t0 = time.monotonic()
    nav.instruction.publish(String(data="   "))
    assert nav.wait_status(lambda s: s.stop_reason == "no_instruction", 3.0, since=t0)
    assert nav.proc.wait_for_log("empty instruction received")
    time.sleep(0.3)
    assert is_zero(nav.cmd.last())
    t1 = time.monotonic()
    nav.instruction.publish(String(data="turn around and stop at the sofa"))
    status = nav.wait_status(
        lambda s: s.instruction == "turn around and stop at the sofa" and s.step >= 1, 5.0, since=t1
    )
    assert status is not None and status.episode > before.episode
    assert nav.proc.alive()


def test_services_pause_resume_stop_reset(harness, nav_a):
    nav = nav_a
    ensure_active(nav)
    nav.camera.start()
    nav.wait_driving()
    t0 = time.monotonic()
    assert harness.call(Trigger, f"{nav.node}/pause").success
    assert nav.wait_status(lambda s: s.stop_reason == "paused", 3.0, since=t0)
    time.sleep(0.3)
    assert is_zero(nav.cmd.last())
    assert harness.call(Trigger, f"{nav.node}/resume").success
    nav.wait_driving()
    t1 = time.monotonic()
    assert harness.call(Trigger, f"{nav.node}/stop").success
    stopped = nav.wait_status(lambda s: s.stop_reason == "stopped", 3.0, since=t1)
    assert stopped is not None
    time.sleep(0.4)
    assert is_zero(nav.cmd.last()) and all(
        is_zero(m) for m in nav.cmd.since(time.monotonic() - 0.3))
    response = harness.call(Trigger, f"{nav.node}/reset")
    assert response.success, response.message
    restarted = nav.wait_status(lambda s: s.episode == stopped.episode + 1 and s.step >= 1, 5.0)
    assert restarted is not None


def test_bad_inputs_are_logged_and_survived(harness, nav_a):
    nav = nav_a
    ensure_active(nav)
    nav.camera.pause()
    time.sleep(0.2)
    pub = nav.camera.pub
    good = numpy_to_image(frame(), "rgb8")

    wrong_encoding = numpy_to_image(frame(), "rgb8")
    wrong_encoding.encoding = "yuv422"
    zero_size = Image(encoding="rgb8", height=0, width=0, step=0)
    step_mismatch = numpy_to_image(frame(), "rgb8")
    step_mismatch.step = 10
    truncated = numpy_to_image(frame(), "rgb8")
    truncated.data = bytes(truncated.data)[: len(truncated.data) // 2]
    depth_only = numpy_to_image(np.zeros(SMALL, np.float32), "32FC1")  # not a colour image

    expected = [
        (wrong_encoding, "encoding: unsupported image encoding 'yuv422'"),
        (zero_size, "height/width: empty image"),
        (step_mismatch, "step: 10 bytes is smaller than one row"),
        (truncated, "(truncated)"),
        (depth_only, "'32FC1' is not a colour encoding"),
    ]
    for msg, text in expected:
        pub.publish(msg)
        assert nav.proc.wait_for_log(text, 5.0), f"no log line with {text!r}:\n{nav.proc.log()}"
        assert nav.proc.alive()
    assert "bad image on /nav_a/camera/image_raw" in nav.proc.log()

    depth_pub = harness.publisher(Image, "/nav_a/camera/depth", qos(1))
    depth = np.full(SMALL, 1.5, np.float32)
    depth[:4] = np.nan
    harness.wait_for_subscribers(depth_pub)

    def nan_depth_logged():  # best effort: repeat until the reader has matched
        depth_pub.publish(numpy_to_image(depth, "32FC1"))
        return "NaN/inf/negative" in nav.proc.log()

    assert wait_until(nan_depth_logged, 5.0, period=0.2), nav.proc.log()
    assert "depth image has 128 of 768 pixels NaN/inf/negative" in nav.proc.log()

    # CameraInfo that disagrees with the images: a warning, frames still used
    info_pub = harness.publisher(CameraInfo, "/nav_a/camera/camera_info", qos(1))
    harness.wait_for_subscribers(info_pub)

    def mismatch_logged():
        info_pub.publish(CameraInfo(width=640, height=480))
        pub.publish(good)
        return "camera_info says 640x480 but images are 32x24" in nav.proc.log()

    assert wait_until(mismatch_logged, 5.0, period=0.2), nav.proc.log()

    t0 = time.monotonic()
    nav.instruction.publish(String(data=""))
    assert nav.proc.wait_for_log("empty instruction received", 5.0)
    assert nav.wait_status(lambda s: s.stop_reason == "no_instruction", 3.0, since=t0)

    status = nav.wait_status(lambda s: s.frames_invalid >= 5, 3.0)
    assert status is not None, "frames_invalid not counted"
    # still alive and driving on good input
    nav.instruction.publish(String(data="go ahead"))
    for _ in range(3):
        pub.publish(good)
        time.sleep(0.05)
    nav.camera.start()
    nav.wait_driving()
    assert nav.proc.alive()


def test_640x480_best_effort_images(nav_a):
    """A 900 KiB frame over sensor-data QoS: needs the Fast DDS SHM profile (ros2-env.md 2.3)."""
    nav = nav_a
    ensure_active(nav)
    nav.camera.pause()
    big = numpy_to_image(frame((480, 640)), "rgb8")
    t0 = time.monotonic()
    for _ in range(20):
        big.header.stamp = nav.harness.node.get_clock().now().to_msg()
        nav.camera.pub.publish(big)
        time.sleep(0.05)
    status = nav.wait_status(lambda s: s.step > 0, 3.0, since=t0)
    assert status is not None, nav.proc.log()
    assert nav.cmd.wait_for(lambda m: m.linear.x > 0, 1.0, since=t0) is not None


@pytest.fixture(scope="module")
def nav_b(harness):
    params = dict(
        model="constant:TURN_LEFT:0.0:fail=2,3", image_transport="compressed",
        enable_stamped_cmd_vel=True, cmd_vel_frame_id="base_footprint", turn_angle=5.0,
        max_angular_speed=1.0, angular_acceleration=0.0, control_rate=50.0,
        policy_error_retry=0.3, autostart=True, continuous_motion=False,
    )
    nav = NavigatorUnderTest(harness, "nav_b", params, stamped=True, compressed=True)
    yield nav
    nav.close()


def test_compressed_stamped_turns_and_policy_errors(harness, nav_b):
    nav = nav_b
    diag = harness.record(DiagnosticArray, "/diagnostics")
    nav.instruction.publish(String(data="turn left"))
    nav.camera.start()
    assert wait_until(lambda: nav.state() == "active", 10.0)  # autostart
    # step 1 drives; steps 2 and 3 raise; step 4 drives again
    error = nav.wait_status(lambda s: s.stop_reason == "policy_error", 10.0)
    assert error is not None, nav.proc.log()
    assert "scripted failure" in error.detail
    assert nav.proc.wait_for_log("policy raised RuntimeError")
    assert diag.wait_for(lambda m: any(
        s.name.startswith(nav.node) and s.level == DiagnosticStatus.ERROR for s in m.status), 3.0)
    recovered = nav.wait_status(lambda s: s.step >= 2 and s.stop_reason == "none", 10.0)
    assert recovered is not None, nav.proc.log()
    cmds = nav.cmd.messages
    assert all(m.header.frame_id == "base_footprint" for m in cmds)
    assert any(m.twist.angular.z > 0 for m in cmds)
    assert all(m.twist.linear.x == 0.0 and m.twist.angular.z >= 0.0 for m in cmds)
    for run in complete_runs([m.twist for m in cmds], axis="angular"):
        assert sum(run) / 50.0 == pytest.approx(math.radians(5.0), abs=1e-9)
    assert set(m.data for m in nav.actions.messages) == {"TURN_LEFT"}

    # a corrupt JPEG is logged and dropped
    corrupt = numpy_to_compressed(frame(), "jpeg")
    corrupt.data = bytes(corrupt.data)[:40] + b"\x00" * 20
    nav.camera.pub.publish(corrupt)
    assert nav.proc.wait_for_log("cannot decode", 5.0), nav.proc.log()
    assert nav.proc.alive()

    # lifecycle shutdown from active: the robot's last command is a zero, the node finalizes
    nav.wait_driving()
    t0 = time.monotonic()
    assert nav.transition("active_shutdown")
    assert nav.state() == "finalized"
    time.sleep(0.3)
    assert nav.cmd.since(t0) and is_zero(nav.twist(nav.cmd.last()))
    assert nav.proc.wait_for_log("shutdown: robot stopped, policy released")


def test_slow_policy_does_not_block_callbacks(harness):
    """A 1.5 s policy: a pause arriving meanwhile is served at once and the step discarded."""
    params = dict(model="constant:MOVE_FORWARD:1.5", autostart=True, image_timeout=2.0)
    nav = NavigatorUnderTest(harness, "nav_d", params)
    try:
        nav.instruction.publish(String(data="go"))
        assert wait_until(lambda: nav.state() == "active", 10.0)
        nav.camera.start()
        assert nav.proc.wait_for_log("inputs ok again", 5.0)  # the first act starts now
        time.sleep(0.3)
        assert harness.call(Trigger, f"{nav.node}/pause").success  # served during act()
        assert nav.state() == "active"  # so is the lifecycle service
        discarded = nav.wait_status(lambda s: s.steps_discarded == 1, 5.0)
        assert discarded is not None, nav.proc.log()
        assert discarded.step == 0 and discarded.stop_reason == "paused"
        assert all(is_zero(m) for m in nav.cmd.messages)
        assert nav.proc.wait_for_log("step result MOVE_FORWARD discarded: paused")
    finally:
        nav.close()


class FakeBase:
    """A robot base: integrates cmd_vel (with wheel slip) and publishes odometry at 50 Hz."""

    def __init__(self, harness, ns, slip=0.5):
        from nav_msgs.msg import Odometry

        self.slip, self.x, self.cmd = slip, 0.0, Twist()
        self.pub = harness.publisher(Odometry, f"/{ns}/odom", qos(10))
        harness.node.create_subscription(Twist, f"/{ns}/cmd_vel", self._on_cmd, qos())
        self.running, self.stop = threading.Event(), threading.Event()
        self.running.set()
        self.msg = Odometry()
        self.msg.pose.pose.orientation.w = 1.0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _on_cmd(self, msg):
        self.cmd = msg

    def _loop(self):
        while not self.stop.is_set():
            self.x += self.slip * self.cmd.linear.x * 0.02
            if self.running.is_set():
                self.msg.pose.pose.position.x = self.x
                self.pub.publish(self.msg)
            time.sleep(0.02)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


def test_odometry_closed_loop_reaches_distance_despite_slip(harness):
    params = dict(model="constant:MOVE_FORWARD", autostart=True, motion_mode="odometry",
                  forward_distance=0.1, max_linear_speed=0.4, linear_acceleration=2.0,
                  control_rate=50.0, max_steps=1, odom_timeout=0.5,
                  require_resume=False)  # the camera is paused on purpose below
    base = FakeBase(harness, "nav_e", slip=0.5)
    nav = NavigatorUnderTest(harness, "nav_e", params)
    try:
        nav.instruction.publish(String(data="one step"))
        nav.camera.start()
        done = nav.wait_status(lambda s: s.stop_reason == "max_steps", 10.0)
        assert done is not None, nav.proc.log()
        time.sleep(0.2)
        # a timed profile would have covered 0.05 m at 50% slip; odometry closes the loop
        assert base.x == pytest.approx(0.1, abs=0.012)
        assert is_zero(nav.cmd.last())
        # motion_mode odometry: no odometry, no driving
        base.running.clear()
        time.sleep(1.0)  # older than odom_timeout (0.5 s)
        t0 = time.monotonic()
        nav.instruction.publish(String(data="next step"))
        assert nav.wait_status(lambda s: s.stop_reason == "no_odometry", 5.0, since=t0)
        time.sleep(0.3)
        assert all(is_zero(m) for m in nav.cmd.since(t0))
        # motion_mode auto (closed loop while odometry is fresh): odometry lost in the middle
        # of a 2.5 s closed-loop motion is caught by the motion loop, which stops the robot
        nav.camera.pause()
        time.sleep(0.7)  # camera stale: no step while reconfiguring
        assert set_param(harness, nav.node, "forward_distance", 0.5).successful
        assert set_param(harness, nav.node, "motion_mode", "auto").successful
        x0 = base.x
        base.running.set()
        time.sleep(0.2)
        nav.camera.start()
        nav.wait_driving()
        base.running.clear()
        assert nav.proc.wait_for_log("odometry went stale during a closed-loop motion", 3.0), \
            nav.proc.log()
        time.sleep(0.2)
        assert is_zero(nav.cmd.last())
        assert base.x - x0 < 0.4  # cut short of the 0.5 m step
        assert nav.wait_status(lambda s: s.stop_reason == "max_steps", 3.0)
    finally:
        nav.close()
        base.close()


def test_sigint_leaves_zero_as_last_command(harness):
    params = dict(model="constant:MOVE_FORWARD", forward_distance=2.0, max_linear_speed=0.5,
                  autostart=True)
    nav = NavigatorUnderTest(harness, "nav_c", params)
    try:
        nav.instruction.publish(String(data="go"))
        nav.camera.start()
        nav.wait_driving(timeout=10.0)
        time.sleep(0.3)
        assert not is_zero(nav.cmd.last()), "should be mid-motion when interrupted"
        nav.proc.proc.send_signal(2)
        time.sleep(0.05)
        code = nav.proc.sigint()  # a second SIGINT, as ros2 launch sends
        assert code == 0, nav.proc.log()
        time.sleep(0.3)
        assert is_zero(nav.cmd.last()), "the last velocity command was not a zero"
        assert "Traceback" not in nav.proc.log()
    finally:
        nav.camera.close()
        nav.proc.kill()


def test_invalid_parameter_exits_with_clear_message():
    proc = start_navigator({"max_linear_speed": -1.0}, namespace="/nav_bad")
    code = proc.wait(timeout=20)
    assert code == 1
    assert "max_linear_speed" in proc.log() and "invalid parameters" in proc.log()


@pytest.mark.parametrize("override, text", [
    (Parameter("image_transport", value="theora"), "parameter image_transport: 'theora'"),
    (Parameter("model", value="constant:JUMP"), "unknown action name 'JUMP'"),
])
def test_configure_fails_with_reason(harness, override, text, caplog):
    node = NavigatorNode(context=harness.context, parameter_overrides=[override],
                         namespace="/inproc")
    messages = []
    node.get_logger().set_level(10)
    original = node.get_logger().error

    def capture(msg, *args, **kwargs):
        messages.append(msg)
        return original(msg, *args, **kwargs)

    node.get_logger().error = capture
    try:
        from rclpy.lifecycle import TransitionCallbackReturn

        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[1] == "unconfigured"
        assert any(text in m and "configure failed" in m for m in messages), messages
    finally:
        node.destroy_node()


def test_status_record_roundtrip():
    status = NavigatorStatus(step=3, action="TURN_LEFT", latency_ms={"policy": 1.5})
    back = NavigatorStatus.from_json(status.to_json())
    assert back == status
    assert json.loads(status.to_json())["stop_reason"] == "inactive"
