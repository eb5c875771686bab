"""Shared ROS 2 test fixture: an isolated in-process node plus helpers for real node processes.

* Isolation (ros2-env.md section 2.2): LOCALHOST discovery, a random ROS_DOMAIN_ID, a temporary
  ROS_LOG_DIR and the Fast DDS SHM profile (images > 512 KiB). test/conftest.py sets the same;
  this module repeats it with setdefault so that it also works on its own (benchmarks).
* :class:`RosHarness`: its own rclpy Context, node and executor; the spin thread is joined
  before the context is shut down.
* :class:`NodeProcess`: an installed executable (or ``python -m``) started with
  ``Popen(start_new_session=True)``, its output in a file, stopped with SIGINT (SIGKILL to the
  process group only as a fallback).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def isolate_ros_env() -> None:
    """Set the ROS 2 isolation variables unless they are already set."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="janus_ros_log_"))
    profile = REPO / "config" / "fastdds_shm.xml"
    if profile.exists():
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
    os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


isolate_ros_env()

import rclpy  # noqa: E402 - after the environment is set
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402

TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "cleanup": Transition.TRANSITION_CLEANUP,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
    "inactive_shutdown": Transition.TRANSITION_INACTIVE_SHUTDOWN,
    "active_shutdown": Transition.TRANSITION_ACTIVE_SHUTDOWN,
}


def qos(depth=10, reliable=True, latched=False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def wait_until(predicate, timeout: float, period: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(period)


class Recorder:
    """Every message received on one topic, with the monotonic time it arrived."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items: list[tuple[float, object]] = []

    def __call__(self, msg):
        with self.lock:
            self.items.append((time.monotonic(), msg))

    @property
    def messages(self) -> list:
        with self.lock:
            return [m for _, m in self.items]

    def since(self, t0: float) -> list:
        with self.lock:
            return [m for t, m in self.items if t >= t0]

    def timed_since(self, t0: float) -> list[tuple[float, object]]:
        with self.lock:
            return [(t, m) for t, m in self.items if t >= t0]

    def last(self):
        with self.lock:
            return self.items[-1][1] if self.items else None

    def clear(self):
        with self.lock:
            self.items.clear()

    def wait_for(self, predicate=lambda m: True, timeout: float = 5.0, since: float = 0.0):
        """The first message since ``since`` that satisfies ``predicate``, or None on timeout."""
        found = []

        def check():
            for msg in self.since(since):
                if predicate(msg):
                    found.append(msg)
                    return True
            return False

        wait_until(check, timeout)
        return found[0] if found else None


class RosHarness:
    """A test node in its own Context, spun by a background executor thread."""

    def __init__(self, name: str = "test_harness"):
        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"{name}-spin", daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def close(self):
        """Stop spinning, join the thread, then destroy the node and shut the context down."""
        self.executor.shutdown()
        self._thread.join(timeout=10)
        self.node.destroy_node()
        self.context.try_shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def record(self, msg_type, topic: str, qos_profile=None) -> Recorder:
        recorder = Recorder()
        self.node.create_subscription(msg_type, topic, recorder, qos_profile or qos())
        return recorder

    def publisher(self, msg_type, topic: str, qos_profile=None):
        return self.node.create_publisher(msg_type, topic, qos_profile or qos())

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 10.0) -> bool:
        return wait_until(lambda: publisher.get_subscription_count() >= count, timeout)

    def call(self, srv_type, name: str, request=None, timeout: float = 10.0):
        """Call a service and return the response (AssertionError on timeout)."""
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
            future = client.call_async(request if request is not None else srv_type.Request())
            assert wait_until(future.done, timeout), f"service {name} did not answer"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def change_state(self, node: str, transition: str, timeout: float = 20.0) -> bool:
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[transition]
        return self.call(ChangeState, f"{node}/change_state", request, timeout).success

    def get_state(self, node: str, timeout: float = 10.0) -> str:
        response = self.call(GetState, f"{node}/get_state", GetState.Request(), timeout)
        return response.current_state.label


def installed_navigator() -> Path | None:
    """``install/janus_vln_ros/lib/janus_vln_ros/navigator`` if built and its setup sourced."""
    prefix = REPO / "install" / "janus_vln_ros"
    exe = prefix / "lib" / "janus_vln_ros" / "navigator"
    sourced = str(prefix) in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    return exe if exe.exists() and sourced else None


def navigator_command() -> list[str]:
    """The colcon-installed ``navigator`` when present, else ``python -m`` on the source tree."""
    installed = installed_navigator()
    if installed is not None:
        return [str(installed)]
    return [sys.executable, "-m", "janus_vln_ros.navigator_node"]


def param_arg(value) -> str:
    """A value as ``-p name:=value`` expects it (YAML): floats keep their decimal point."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and (value == "" or not isinstance(yaml.safe_load(value), str)):
        return "'" + value.replace("'", "''") + "'"  # keep "", "true", "1.0" strings
    return str(value)


def ros_args(params: dict | None = None, name: str | None = None, namespace: str | None = None,
             params_file: str | Path | None = None, remaps: dict | None = None) -> list[str]:
    args = ["--ros-args"]
    if name:
        args += ["-r", f"__node:={name}"]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    for src, dst in (remaps or {}).items():
        args += ["-r", f"{src}:={dst}"]
    if params_file:
        args += ["--params-file", str(params_file)]
    for key, value in (params or {}).items():
        args += ["-p", f"{key}:={param_arg(value)}"]
    return args


class NodeProcess:
    """A node process in its own session; its stdout+stderr go to a log file."""

    def __init__(self, command: list[str], log_dir: Path | None = None, env: dict | None = None):
        log_dir = Path(log_dir or tempfile.mkdtemp(prefix="janus_node_"))
        self.log_path = log_dir / f"node_{int(time.time() * 1e3)}_{random.randint(0, 9999)}.log"
        self._log = open(self.log_path, "wb")
        self.command = command
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})}, cwd=REPO,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until ``text`` is in the output; give up early if the process has exited."""
        wait_until(lambda: text in self.log() or not self.alive(), timeout, period=0.05)
        return text in self.log()

    def sigint(self, timeout: float = 20.0) -> int:
        """SIGINT, wait for the exit code; SIGKILL the process group if it hangs."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise AssertionError(
                f"{self.command} ignored SIGINT for {timeout} s:\n{self.log()}"
            ) from None
        finally:
            self._log.close()

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self):
        """Last-resort cleanup for a test that failed midway."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self._log.close()


def start_navigator(params: dict | None = None, name: str = "navigator", **kwargs) -> NodeProcess:
    return NodeProcess(navigator_command() + ros_args(params, name=name, **kwargs))
