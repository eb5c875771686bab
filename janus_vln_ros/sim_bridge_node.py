"""The ``sim_bridge`` node: a VLN-CE simulator behind the topics a robot's navigator uses.

It loads a split, runs its episodes one after another and speaks the robot's interface: for each
step it publishes the RGB image (and depth), the CameraInfo of the simulator camera and the
odometry; for each episode the instruction (latched). It executes the navigator's discrete
action topic, one simulator step per action, and records every finished episode in the same
resumable results file, with the same schema and metrics, as the in-process evaluation runner
(``janus-vln eval``): ``janus-vln merge`` reads either. The episode loop and its deterministic
step handshake are pure logic in :mod:`janus_vln_ros.sim_session`; this file is wiring.

Topics (relative, so a namespace applies; parameters rename them):

* out: ``camera/image_raw`` (rgb8), ``camera/depth/image_raw`` (32FC1 m or 16UC1 mm),
  ``camera/camera_info``, ``odom``, ``instruction`` (reliable, transient local),
  ``~/episode_result`` (the JSON record of each finished episode), ``~/progress`` (JSON,
  transient local).
* in: ``navigator/action`` (std_msgs/String) and ``navigator/status`` (the navigator's JSON
  status records, which echo the stamp of the frame each step used); with ``motion_source:
  cmd_vel``, ``cmd_vel`` (Twist or TwistStamped) instead of the action topic.

Services (std_srvs/Trigger): ``~/start`` (run the split; automatic with ``autostart``),
``~/skip`` (record the current episode as skipped, go on), ``~/reset`` (restart the current
episode), ``~/expert_action`` (the shortest-path expert's action for the observation awaiting
an action, as JSON; the navigator's ``expert:ros`` policy asks it).

Restarts: a killed bridge loses only the episode in flight; started again with the same
parameters it skips every episode in the results file and runs the rest. A killed navigator is
noticed by its new status publisher and the current episode starts again from its beginning.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import traceback

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from janus_vln_ros.conversions import numpy_to_image
from janus_vln_ros.sim_bridge_params import (
    SimBridgeConfigError,
    SimBridgeParams,
    declare_parameters,
    read_parameters,
)
from janus_vln_ros.sim_session import (
    NavReport,
    Phase,
    SimSession,
    expert_reply,
    habitat_to_ros_pose,
    pinhole_intrinsics,
    yaw_to_ros_quaternion,
)
from janus_vln_ros.status import NavigatorStatus

NODE_NAME = "sim_bridge"
START_FAILED = 2  # exit code: bad parameters, split, run directory or backend (do not restart)


def _qos(depth: int, latched: bool = False) -> QoSProfile:
    """Reliable QoS with every policy written out (an evaluation must not drop a frame)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def _stamp(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def _session_key(info) -> bytes | None:
    """The publisher GID of a received message (None if the middleware gives none)."""
    gid = (info or {}).get("publisher_gid") if isinstance(info, dict) else None
    if not gid:
        return None
    data = gid.get("data") if isinstance(gid, dict) else gid
    return bytes(data) if data is not None else None


class SimBridgeNode(Node):
    """Runs a split through a navigator over ROS topics (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.params: SimBridgeParams = read_parameters(self)
        self.done = threading.Event()
        self.failed = False
        self.summary: dict | None = None
        p = self.params
        cfg = p.eval_config()
        if not cfg.split:
            raise SimBridgeConfigError("parameter split: required (an R2R/RxR episode file)")
        from sim_bridge.evaluate import make_sim, plan_run

        self.plan = plan_run(cfg)
        cfg = self.plan.cfg  # resolved: the backend auto chose
        self.sim = None
        try:
            self.sim = make_sim(cfg)
        except Exception:
            self.plan.close()
            raise
        self._intrinsics = pinhole_intrinsics(cfg.width, cfg.height, cfg.hfov_deg)
        image_qos = _qos(2)
        self._image_pub = self.create_publisher(Image, p.image_topic, image_qos)
        self._depth_pub = (
            self.create_publisher(Image, p.depth_topic, image_qos) if p.depth_topic else None
        )
        self._info_pub = (
            self.create_publisher(CameraInfo, p.camera_info_topic, _qos(2))
            if p.camera_info_topic else None
        )
        self._odom_pub = self.create_publisher(Odometry, p.odom_topic, _qos(2)) \
            if p.odom_topic else None
        self._instruction_pub = self.create_publisher(
            String, p.instruction_topic, _qos(1, latched=True)
        )
        self._result_pub = self.create_publisher(String, "~/episode_result", _qos(100))
        self._progress_pub = self.create_publisher(String, "~/progress", _qos(1, latched=True))
        self._subs = [
            self.create_subscription(String, p.action_topic, self._on_action, _qos(10)),
            self.create_subscription(String, p.status_topic, self._on_status, _qos(50)),
        ]
        if p.motion_source == "cmd_vel":
            cmd_type = TwistStamped if p.cmd_vel_stamped else Twist
            self._subs.append(self.create_subscription(
                cmd_type, p.cmd_vel_topic, self._on_cmd_vel, _qos(100)))
        self._services = [
            self.create_service(Trigger, "~/start", self._srv_start),
            self.create_service(Trigger, "~/skip", self._srv_skip),
            self.create_service(Trigger, "~/reset", self._srv_reset),
            self.create_service(Trigger, "~/expert_action", self._srv_expert),
        ]
        self.session = SimSession(
            self.plan, self.sim, self, ack_timeout=p.ack_timeout, step_timeout=p.step_timeout,
            max_attempts=p.max_attempts, motion_source=p.motion_source,
        )
        self._bad_status_logged = False
        self._timer = self.create_timer(0.05, self._on_timer)
        self._autostart = p.autostart
        self.get_logger().info(
            f"{len(self.plan.mine)} episode(s) in shard {self.plan.shard}/{self.plan.num_shards} "
            f"of {cfg.split}, {len(self.plan.todo())} to run; results in {self.plan.out}"
        )
        self.publish_progress(self.session.progress())

    # ------------------------------------------------------------------ BridgeOutput
    def publish_instruction(self, text: str) -> None:
        """Publish the episode instruction (latched)."""
        self._instruction_pub.publish(String(data=text))

    def publish_observation(self, obs, stamp_ns: int) -> None:
        """Depth, camera info and odometry first, the RGB image last (the navigator's trigger)."""
        p = self.params
        stamp = _stamp(stamp_ns)
        if self._depth_pub is not None and obs.depth.size:
            depth = np.asarray(obs.depth, dtype=np.float32)
            if p.depth_encoding == "16UC1":
                depth = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
            self._depth_pub.publish(numpy_to_image(depth, p.depth_encoding, stamp, p.camera_frame))
        if self._info_pub is not None:
            self._info_pub.publish(self._camera_info(stamp))
        if self._odom_pub is not None:
            self._odom_pub.publish(self._odometry(obs, stamp))
        if obs.rgb.size == 0:
            raise RuntimeError("the simulator renders no images (sim_settings render: false?)")
        self._image_pub.publish(numpy_to_image(obs.rgb, "rgb8", stamp, p.camera_frame))

    def publish_result(self, record: dict) -> None:
        """Publish a finished episode's record as JSON."""
        self._result_pub.publish(String(data=json.dumps(record, separators=(",", ":"))))

    def publish_progress(self, progress: dict) -> None:
        """Publish the run's progress as JSON (latched)."""
        self._progress_pub.publish(String(data=json.dumps(progress, sort_keys=True)))

    def finished(self, summary: dict) -> None:
        """Every episode has a result: log the table; exit if ``exit_when_done``."""
        from sim_bridge.metrics import format_table

        self.summary = summary
        self.get_logger().info(
            f"split finished: {summary['finished']} of {summary['expected']} episodes; "
            f"metrics in {self.plan.out / 'metrics.json'}\n{format_table(summary['summary'])}"
        )
        if self.params.exit_when_done:
            self.done.set()

    # ------------------------------------------------------------------ messages
    def _camera_info(self, stamp: Time) -> CameraInfo:
        fx, fy, cx, cy = self._intrinsics
        msg = CameraInfo()
        msg.header.stamp = stamp
        msg.header.frame_id = self.params.camera_frame
        msg.width, msg.height = self.params.width, self.params.height
        msg.distortion_model = "plumb_bob"
        msg.d = [0.0] * 5
        msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return msg

    def _odometry(self, obs, stamp: Time) -> Odometry:
        (x, y, z), yaw = habitat_to_ros_pose(obs.position, obs.yaw)
        msg = Odometry()
        msg.header.stamp = stamp
        msg.header.frame_id = self.params.odom_frame
        msg.child_frame_id = self.params.base_frame
        msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = x, y, z
        q = msg.pose.pose.orientation
        q.x, q.y, q.z, q.w = yaw_to_ros_quaternion(yaw)
        return msg

    # ------------------------------------------------------------------ callbacks
    def _on_status(self, msg: String, info) -> None:  # two arguments: rclpy passes MessageInfo
        try:
            status = NavigatorStatus.from_json(msg.data)
        except (ValueError, TypeError) as err:
            if not self._bad_status_logged:
                self._bad_status_logged = True
                self.get_logger().error(f"unreadable navigator status ({err}): {msg.data[:200]}")
            return
        self._guard(self.session.on_status, NavReport.from_status(status, _session_key(info)))

    def _on_cmd_vel(self, msg: Twist | TwistStamped) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        self._guard(self.session.on_cmd_vel, float(twist.linear.x), float(twist.angular.z),
                    self.params.cmd_vel_period)

    def _on_action(self, msg: String) -> None:
        self._guard(self.session.on_action, msg.data)

    def _on_timer(self) -> None:
        if self._autostart:
            self._autostart = False
            self._guard(self.session.start)
        self._guard(self.session.tick)

    def _guard(self, function, *args):
        """Call into the session; a simulator failure ends the node instead of hanging it."""
        try:
            return function(*args)
        except Exception as err:  # noqa: BLE001 - logged, then the node stops with code 1
            self.get_logger().fatal(
                f"sim_bridge failed: {type(err).__name__}: {err}\n{traceback.format_exc()}"
            )
            self.failed = True
            self.done.set()
            return None

    def _srv_start(self, request, response):
        result = self._guard(self.session.start)
        self._autostart = False
        response.success, response.message = result if result else (False, "failed")
        return response

    def _srv_skip(self, request, response):
        result = self._guard(self.session.skip)
        response.success, response.message = result if result else (False, "failed")
        self.get_logger().info(f"~/skip: {response.message}")
        return response

    def _srv_reset(self, request, response):
        result = self._guard(self.session.reset_episode)
        response.success, response.message = result if result else (False, "failed")
        self.get_logger().info(f"~/reset: {response.message}")
        return response

    def _srv_expert(self, request, response):
        answer = self._guard(self.session.expert)
        response.success, response.message = expert_reply(answer)
        return response

    def close(self) -> None:
        """Close the results file and the simulator."""
        self.plan.close()
        if self.sim is not None:
            self.sim.close()
            self.sim = None

    @property
    def phase(self) -> Phase:
        """The session's phase."""
        return self.session.phase


def main(args: list[str] | None = None) -> int:
    """Run the bridge until SIGINT/SIGTERM (or the end of the split with ``exit_when_done``).

    Exit codes: 0 clean, 1 a failure while running, 2 (``START_FAILED``) cannot start.
    """
    rclpy.init(args=sys.argv if args is None else args,
               signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()  # a second SIGINT (ros2 launch forwards one) changes nothing

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    node: SimBridgeNode | None = None
    executor: SingleThreadedExecutor | None = None
    spin_thread: threading.Thread | None = None
    code = 0
    try:
        try:
            node = SimBridgeNode()
        except Exception as err:  # noqa: BLE001 - bad parameters, split, run dir or backend
            get_logger(NODE_NAME).fatal(f"cannot start: {type(err).__name__}: {err}")
            return START_FAILED
        executor = SingleThreadedExecutor()
        executor.add_node(node)

        def spin():
            try:
                executor.spin()
            except ExternalShutdownException:
                pass

        spin_thread = threading.Thread(target=spin, name="sim-bridge-executor")
        spin_thread.start()
        while not stop.wait(0.1):
            if node.done.is_set():
                code = 1 if node.failed else 0
                break
            if not spin_thread.is_alive():
                node.get_logger().error("executor stopped unexpectedly; shutting down")
                code = 1
                break
        if node.done.is_set() and not node.failed:
            time.sleep(0.2)  # let the last result and progress messages go out
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # shutdown has begun: no KeyboardInterrupt now
        if executor is not None:
            executor.shutdown()
        if spin_thread is not None:
            spin_thread.join()
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
