"""Shared pieces of the navigator process tests: a camera thread and a navigator under test.

A :class:`NavigatorUnderTest` is a real navigator process (in its own namespace) plus the
harness-side endpoints of all its topics; :class:`Camera` publishes frames from a factory at a
fixed rate in a background thread.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from ros_harness import RosHarness, qos, start_navigator
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, String

from janus_vln_ros.conversions import numpy_to_compressed, numpy_to_image
from janus_vln_ros.status import NavigatorStatus

SMALL = (24, 32)


def frame(shape=SMALL, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(*shape, 3), dtype=np.uint8)


class Camera:
    """Publishes a frame factory's messages at ``rate`` Hz in a background thread."""

    def __init__(self, harness: RosHarness, topic: str, make, msg_type=Image, rate=20.0):
        self.harness, self.make, self.rate = harness, make, rate
        self.pub = harness.publisher(msg_type, topic, qos(depth=1))
        self._run = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            if self._run.is_set():
                msg = self.make()
                msg.header.stamp = self.harness.node.get_clock().now().to_msg()
                self.pub.publish(msg)
            time.sleep(1.0 / self.rate)

    def start(self):
        self._run.set()

    def pause(self):
        self._run.clear()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)


class NavigatorUnderTest:
    """A navigator process plus the harness-side endpoints of all its topics."""

    def __init__(self, harness: RosHarness, ns: str, params: dict, stamped=False,
                 compressed=False):
        self.harness, self.ns, self.params = harness, ns, params
        self.node = f"/{ns}/navigator"
        cmd_type = TwistStamped if stamped else Twist
        self.cmd = harness.record(cmd_type, f"/{ns}/cmd_vel")
        self.actions = harness.record(String, f"{self.node}/action")
        self.status = harness.record(String, f"{self.node}/status")
        self.instruction = harness.publisher(String, f"/{ns}/instruction", qos(1, latched=True))
        self.estop = harness.publisher(Bool, f"/{ns}/estop", qos(10))
        if compressed:
            topic, msg_type = f"/{ns}/camera/image_raw/compressed", CompressedImage
            make = lambda: numpy_to_compressed(frame(), "jpeg")  # noqa: E731
        else:
            topic, msg_type = f"/{ns}/camera/image_raw", Image
            make = lambda: numpy_to_image(frame(), "rgb8")  # noqa: E731
        self.camera = Camera(harness, topic, make, msg_type)
        self.proc = start_navigator(params, namespace=f"/{ns}")

    def twist(self, msg) -> Twist:
        return msg.twist if isinstance(msg, TwistStamped) else msg

    def statuses(self, since=0.0) -> list[NavigatorStatus]:
        return [NavigatorStatus.from_json(m.data) for m in self.status.since(since)]

    def wait_status(self, predicate, timeout=5.0, since=0.0) -> NavigatorStatus | None:
        msg = self.status.wait_for(
            lambda m: predicate(NavigatorStatus.from_json(m.data)), timeout, since
        )
        return NavigatorStatus.from_json(msg.data) if msg else None

    def wait_driving(self, timeout=8.0) -> float:
        """Wait until a non-zero command arrives after now; return when we started waiting."""
        t0 = time.monotonic()
        moving = self.cmd.wait_for(lambda m: not is_zero(self.twist(m)), timeout, since=t0)
        assert moving is not None, f"navigator never drove; log:\n{self.proc.log()}"
        return t0

    def transition(self, name: str) -> bool:
        return self.harness.change_state(self.node, name)

    def state(self) -> str:
        return self.harness.get_state(self.node)

    def close(self):
        self.camera.close()
        if self.proc.alive():
            code = self.proc.sigint()
            assert code == 0, f"navigator exited with {code}:\n{self.proc.log()}"


def is_zero(twist: Twist) -> bool:
    return twist.linear.x == 0.0 and twist.angular.z == 0.0


def runs(twists: list[Twist], axis="linear") -> list[list[float]]:
    """Split commands into runs of non-zero values, each closed by a zero."""
    out, current = [], []
    for t in twists:
        value = t.linear.x if axis == "linear" else t.angular.z
        if value == 0.0:
            if current:
                out.append(current)
            current = []
        else:
            current.append(value)
    return out


def complete_runs(twists: list[Twist], axis="linear") -> list[list[float]]:
    """Runs that started and ended inside the window (a zero before and after)."""
    first_zero = next((i for i, t in enumerate(twists) if is_zero(t)), len(twists))
    return runs(twists[first_zero:], axis)


def set_param(harness, node: str, name: str, value):
    if isinstance(value, str):
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    elif isinstance(value, bool):
        value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, int):
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    else:
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    request = SetParameters.Request()
    request.parameters = [ParameterMsg(name=name, value=value)]
    result = harness.call(SetParameters, f"{node}/set_parameters", request)
    return result.results[0]
