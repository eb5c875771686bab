"""Navigator inputs as a real process: a latched e-stop and pause, and cameras of any size.

* The e-stop stays engaged across deactivate -> cleanup -> configure -> activate and across a
  restart of the e-stop publisher, until an explicit release; after the release the robot moves
  again only on ~/resume or a new instruction. A pause survives the same cycle.
* A 1280x720 camera drives the real (tiny) JanusVLN model end to end, with ~/debug_image on;
  1x1 and 4000x3000 frames are refused up front with a diagnostic naming the size and limit.
"""

from __future__ import annotations

import time

import pytest
from nav_harness import Camera, NavigatorUnderTest, frame, is_zero
from ros_harness import RosHarness, qos, wait_until
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from janus_vln_ros.conversions import image_to_rgb, numpy_to_compressed


@pytest.fixture(scope="module")
def harness():
    h = RosHarness("navigator_inputs_test")
    yield h
    h.close()


def nonzero_since(nav: NavigatorUnderTest, t0: float) -> list:
    return [m for m in nav.cmd.since(t0) if not is_zero(nav.twist(m))]


def test_estop_and_pause_are_latched_across_lifecycle_and_publisher_restart(harness):
    params = dict(model="constant:MOVE_FORWARD", forward_distance=0.05, max_linear_speed=0.5,
                  control_rate=50.0, max_steps=0, autostart=True, image_timeout=2.0)
    nav = NavigatorUnderTest(harness, "nav_latch", params)
    try:
        nav.instruction.publish(String(data="go down the hall"))
        nav.camera.start()
        assert wait_until(lambda: nav.state() == "active", 10.0), nav.proc.log()
        nav.wait_driving()
        t0 = time.monotonic()
        nav.estop.publish(Bool(data=True))
        assert nav.wait_status(lambda s: s.stop_reason == "estop", 3.0, since=t0)
        for transition in ("deactivate", "cleanup", "configure", "activate"):
            assert nav.transition(transition), nav.proc.log()
        # the e-stop publisher goes away and a new one appears (without a message)
        harness.node.destroy_publisher(nav.estop)
        time.sleep(0.3)
        nav.estop = harness.publisher(Bool, f"/{nav.ns}/estop", qos(10))
        harness.wait_for_subscribers(nav.estop)
        time.sleep(3.0)
        assert nonzero_since(nav, t0) == [], "moved with the e-stop engaged"
        status = nav.wait_status(lambda s: s.state == "active", 3.0, since=t0)
        assert status is not None and nav.statuses()[-1].stop_reason == "estop"
        refused = harness.call(Trigger, f"{nav.node}/resume")
        assert not refused.success and "e-stop is engaged" in refused.message
        # an explicit release: still no motion until ~/resume
        t1 = time.monotonic()
        nav.estop.publish(Bool(data=False))
        assert nav.wait_status(lambda s: s.stop_reason == "hold", 3.0, since=t1)
        time.sleep(1.0)
        assert nonzero_since(nav, t1) == []
        response = harness.call(Trigger, f"{nav.node}/resume")
        assert response.success and "hold" in response.message
        nav.wait_driving()

        # a pause survives the lifecycle too, and a new instruction does not end it
        t2 = time.monotonic()
        assert harness.call(Trigger, f"{nav.node}/pause").success
        assert nav.wait_status(lambda s: s.stop_reason == "paused", 3.0, since=t2)
        for transition in ("deactivate", "cleanup", "configure", "activate"):
            assert nav.transition(transition), nav.proc.log()
        nav.instruction.publish(String(data="a new instruction"))
        time.sleep(1.5)
        t3 = time.monotonic()
        assert nonzero_since(nav, t3 - 1.2) == [] and nav.statuses()[-1].stop_reason == "paused"
        assert harness.call(Trigger, f"{nav.node}/resume").success
        nav.wait_driving()

        # after an e-stop release, a new instruction also lets the robot drive
        t4 = time.monotonic()
        nav.estop.publish(Bool(data=True))
        assert nav.wait_status(lambda s: s.stop_reason == "estop", 3.0, since=t4)
        nav.estop.publish(Bool(data=False))
        assert nav.wait_status(lambda s: s.stop_reason == "hold", 3.0, since=t4)
        nav.instruction.publish(String(data="the next task"))
        nav.wait_driving()
    finally:
        nav.close()


def jpeg(shape, seed=0) -> CompressedImage:
    return numpy_to_compressed(frame(shape, seed), "jpeg")


def test_a_1280x720_camera_drives_the_model_and_absurd_sizes_are_refused(harness):
    params = dict(model="tiny", image_transport="compressed", autostart=True, debug_image=True,
                  image_timeout=30.0, max_steps=3)
    nav = NavigatorUnderTest(harness, "nav_cam", params, compressed=True)
    nav.camera.close()
    camera = Camera(harness, f"/{nav.ns}/camera/image_raw/compressed",
                    lambda: jpeg((720, 1280)), CompressedImage, rate=5.0)
    debug = harness.record(Image, f"{nav.node}/debug_image", qos(1))
    try:
        nav.instruction.publish(String(data="walk to the kitchen"))
        camera.start()
        step = nav.wait_status(lambda s: s.step >= 1, 90.0)  # torch import + the tiny model
        assert step is not None, nav.proc.log()
        assert step.policy_failures == 0 and step.stop_reason != "policy_error"
        assert "policy.preprocess" in step.latency_ms and step.action
        image = debug.wait_for(timeout=10.0)
        assert image is not None and (image.width, image.height) == (1280, 720)
        overlay = image_to_rgb(image)
        assert overlay[:20].mean() < overlay[300:400].mean()  # the instruction band
        assert "policy raised" not in nav.proc.log()

        camera.pause()
        time.sleep(0.3)
        before = nav.statuses()[-1].frames_invalid if nav.statuses() else 0
        for msg, text in (
            (jpeg((1, 1)), "size: 1x1 is smaller than min_image_side 16 px"),
            (jpeg((3000, 4000)), "size: 4000x3000 (12.0 MP) exceeds max_image_pixels 4194304"),
        ):
            camera.pub.publish(msg)
            assert nav.proc.wait_for_log(text, 10.0), nav.proc.log()
        nav.instruction.publish(String(data="once more"))
        status = nav.wait_status(lambda s: s.frames_invalid >= before + 2, 5.0)
        assert status is not None
        assert nav.proc.alive()
    finally:
        camera.close()
        nav.close()
