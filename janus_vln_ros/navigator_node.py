"""The ``navigator`` lifecycle node: camera + instruction in, bounded motion out, safely.

Lifecycle (ros2/demos lifecycle_py pattern):

* ``configure``: read and validate parameters (:mod:`janus_vln_ros.params`), build the policy
  from ``model`` (:mod:`janus_vln_ros.policy_factory`), create topics, timers and the worker.
  Invalid parameters or a policy that fails to load give FAILURE with the reason in the log.
* ``activate``: start driving. ``deactivate``: zero velocity at once, keep the episode.
* ``cleanup``: zero velocity, stop the worker, free the policy. ``shutdown``: the same.

Threads: the executor thread runs every callback and never blocks on the policy. Camera
callbacks convert the frame and keep only the latest one (old frames are dropped, never queued).
A worker thread takes the latest frame received after the previous motion ended, calls
``Policy.act``, turns the action into a bounded motion (:mod:`janus_vln_ros.motion`) and streams
its velocity commands; the next step starts when the motion has ended. One condition variable
guards the shared state, and every velocity command is published under it, tagged with the
motion it belongs to: a safety event (stale camera, e-stop, policy error, no instruction,
deactivate, shutdown; rules in :mod:`janus_vln_ros.safety`) cancels the motion and publishes a
zero in the same critical section, so no stale non-zero command can follow it.

SIGINT/SIGTERM: the handler marks the node shutting down and publishes a zero; the node then
stops, publishes a final zero and waits for it to be acknowledged, and ignores further signals
(ros2-env.md section 9), so the last command a robot receives is a zero.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import sys
import threading
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from janus_core.actions import Action
from janus_core.interface import Observation
from janus_vln_ros.conversions import ImageConversionError
from janus_vln_ros.frames import depth_from_message, rgb_from_message
from janus_vln_ros.motion import (
    ZERO,
    MotionOutcome,
    Pose2D,
    Velocity,
    make_follower,
    plan_motion,
    yaw_from_quaternion,
)
from janus_vln_ros.params import (
    PARAMETER_NAMES,
    NavigatorConfigError,
    NavigatorParams,
    declare_parameters,
    read_parameters,
    validate_values,
)
from janus_vln_ros.policy_factory import make_policy
from janus_vln_ros.safety import ERROR, OK, WARN, LogLimiter, SafetyMonitor, StopReason, level
from janus_vln_ros.status import NavigatorStatus

NODE_NAME = "navigator"

_DIAG_LEVEL = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


def _logged_transition(method):
    """Log a transition callback's exception (rclpy turns it into ERROR without a word)."""

    @functools.wraps(method)
    def wrapper(self, state):
        try:
            return method(self, state)
        except Exception:
            self.get_logger().error(f"{method.__name__} raised:\n{traceback.format_exc()}")
            raise

    return wrapper


def _qos(depth: int, reliable: bool = True, latched: bool = False) -> QoSProfile:
    """A QoS profile with every policy written out (teleop_tools style)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


@dataclasses.dataclass
class _Frame:
    """The latest valid camera frame."""

    rgb: np.ndarray
    stamp: float  # header stamp, seconds (0 when the camera leaves it unset)
    received: float  # monotonic, callback entry
    ready: float  # monotonic, after conversion
    seq: int
    transport_ms: float | None  # header stamp to callback entry (shared clock needed)


@dataclasses.dataclass
class _Job:
    """Everything one step needs, captured under the lock."""

    frame: _Frame
    depth: np.ndarray | None
    pose: tuple[float, float, float, float] | None
    instruction: str
    reset: bool
    episode_token: int


class NavigatorNode(LifecycleNode):
    """JanusVLN (or any janus_core Policy) driving a robot over ROS 2 topics.

    Topics (relative names, so a namespace applies; parameters rename the inputs and cmd_vel):
    subscribes ``camera/image_raw`` (or ``.../compressed``), ``camera/camera_info``,
    ``instruction`` (transient-local), ``odom``, ``estop``; publishes ``cmd_vel``,
    ``~/action``, ``~/status`` and ``/diagnostics``. Services: ``~/reset``, ``~/stop``,
    ``~/pause``, ``~/resume`` (std_srvs/Trigger).
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        self._cond = threading.Condition()
        self._params: NavigatorParams | None = None
        self._policy = None
        self._monitor = SafetyMonitor()
        self._limiter = LogLimiter(period=5.0)
        self._state = "unconfigured"
        self._reason, self._detail = StopReason.INACTIVE, "node is not configured"
        self._frame: _Frame | None = None
        self._image_topic = ""
        self._frame_seq = 0
        self._last_used_seq = -1
        self._depth: tuple[np.ndarray, float] | None = None
        self._odom: tuple[Pose2D, float, float] | None = None  # pose, z, monotonic time
        self._camera_info: tuple[int, int] | None = None
        self._instruction_text = ""
        self._pending_reset = False
        self._episode = 0
        self._episode_token = 0
        self._step = 0
        self._last_action = ""
        self._motion_token = 0
        self._motion_active = False
        self._ready_after = 0.0
        self._frames_received = 0
        self._frames_invalid = 0
        self._steps_discarded = 0
        self._last_latency: dict[str, float] = {}
        self._last_frame_stamp = 0.0
        self._worker: threading.Thread | None = None
        self._worker_stop = False
        self._cmd_pub = None
        self._action_pub = None
        self._status_pub = None
        self._diag_pub = None
        self._nav_subs: list = []
        self._nav_timers: list = []
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._srv_handles = [
            self.create_service(Trigger, "~/reset", self._srv_reset),
            self.create_service(Trigger, "~/stop", self._srv_stop),
            self.create_service(Trigger, "~/pause", self._srv_pause),
            self.create_service(Trigger, "~/resume", self._srv_resume),
        ]
        self._autostart_timer = None
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # ------------------------------------------------------------------ lifecycle
    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load parameters and the policy; SUCCESS -> inactive, FAILURE -> unconfigured."""
        try:
            params = read_parameters(self)
        except NavigatorConfigError as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configure: loading policy {params.model!r}")
        start = time.perf_counter()
        try:
            policy = make_policy(params.model)
        except Exception as err:  # noqa: BLE001 - any loader failure is a configure failure
            self.get_logger().error(
                f"configure failed: cannot build policy from model={params.model!r}: "
                f"{type(err).__name__}: {err}"
            )
            return TransitionCallbackReturn.FAILURE
        elapsed = time.perf_counter() - start
        name = type(policy).__name__
        self.get_logger().info(f"configure: policy {name} ready in {elapsed:.2f} s")
        with self._cond:
            self._params = params
            self._policy = policy
            self._monitor = SafetyMonitor(
                image_timeout=params.image_timeout,
                policy_error_retry=params.policy_error_retry,
                odom_timeout=params.odom_timeout,
                require_odometry=params.motion_mode == "odometry",
            )  # no instruction: a latched one is delivered again by the new subscription
            self._instruction_text = ""
            self._pending_reset = False
            self._create_interfaces(params)
            self._worker_stop = False
            self._state = "inactive"
            self._refresh_locked()
        self._worker = threading.Thread(target=self._work, name="navigator-policy", daemon=True)
        self._worker.start()
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start driving."""
        with self._cond:
            self._monitor.active = True
            self._state = "active"
            self._refresh_locked()
            self._cond.notify_all()
        self.get_logger().info("activated: driving when an instruction and frames are present")
        return super().on_activate(state)

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the robot at once; the episode is kept for the next activate."""
        with self._cond:
            self._monitor.active = False
            self._state = "inactive"
            self._halt_locked()
            self._refresh_locked()
        self.get_logger().info("deactivated: robot stopped")
        return super().on_deactivate(state)

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the robot, stop the worker, free the policy and the topics."""
        self._release("cleanup")
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the robot and release everything."""
        with self._cond:
            self._monitor.shutdown = True
        self._release("shutdown")
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the robot and release everything; SUCCESS returns to unconfigured."""
        self.get_logger().error("lifecycle error: stopping the robot and releasing the policy")
        self._release("error")
        return TransitionCallbackReturn.SUCCESS

    def _autostart(self) -> None:
        """One-shot timer: configure and activate (parameter ``autostart``)."""
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().error("autostart: configure failed; node stays unconfigured")
            return
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().error("autostart: activate failed; node stays inactive")

    def _create_interfaces(self, params: NavigatorParams) -> None:
        """Publishers, subscriptions and timers for one configured lifetime (lock held)."""
        cmd_type = TwistStamped if params.enable_stamped_cmd_vel else Twist
        self._cmd_pub = self.create_publisher(cmd_type, params.cmd_vel_topic, _qos(10))
        self._action_pub = self.create_publisher(String, "~/action", _qos(10))
        self._status_pub = self.create_publisher(String, "~/status", _qos(10))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", _qos(10))
        image_qos = _qos(1, reliable=params.image_qos == "reliable")
        if params.image_transport == "compressed":
            image_topic = params.image_topic.rstrip("/") + "/compressed"
            image_type = CompressedImage
        else:
            image_topic, image_type = params.image_topic, Image
        image_sub = self.create_subscription(image_type, image_topic, self._on_image, image_qos)
        self._image_topic = image_sub.topic_name  # resolved, for log lines
        subs = [
            image_sub,
            self.create_subscription(
                String, params.instruction_topic, self._on_instruction, _qos(1, latched=True),
                event_callbacks=SubscriptionEventCallbacks(
                    incompatible_qos=self._on_instruction_qos
                ),
            ),
            self.create_subscription(Bool, params.estop_topic, self._on_estop, _qos(10)),
        ]
        if params.camera_info_topic:
            subs.append(self.create_subscription(
                CameraInfo, params.camera_info_topic, self._on_camera_info, _qos(1, False)
            ))
        if params.depth_topic:
            subs.append(self.create_subscription(
                Image, params.depth_topic, self._on_depth, image_qos
            ))
        if params.odom_topic:
            subs.append(self.create_subscription(
                Odometry, params.odom_topic, self._on_odom, _qos(1, reliable=False)
            ))
        self._nav_subs = subs
        self._nav_timers = [
            self.create_timer(params.watchdog_period, self._on_watchdog),
            self.create_timer(params.diagnostics_period, self._publish_diagnostics),
        ]

    def _release(self, why: str) -> None:
        """Zero the robot, stop the worker, destroy the interfaces, close the policy."""
        self.get_logger().info(f"{why}: releasing")
        with self._cond:
            self._monitor.active = False
            self._halt_locked()
            self._worker_stop = True
            self._cond.notify_all()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.join(timeout=10.0)
            if worker.is_alive():
                self.get_logger().error(
                    f"{why}: the policy worker is still inside the policy after 10 s; "
                    "leaving it (it can no longer publish)"
                )
        with self._cond:
            for entity in self._nav_subs:
                self.destroy_subscription(entity)
            for timer in self._nav_timers:
                self.destroy_timer(timer)
            self._nav_subs, self._nav_timers = [], []
            for pub in (self._cmd_pub, self._action_pub, self._status_pub, self._diag_pub):
                if pub is not None:
                    self.destroy_publisher(pub)
            self._cmd_pub = self._action_pub = self._status_pub = self._diag_pub = None
            policy, self._policy = self._policy, None
            self._frame, self._depth, self._odom = None, None, None
            self._state = "finalized" if why == "shutdown" else "unconfigured"
        if policy is not None and (worker is None or not worker.is_alive()):
            try:
                policy.close()
            except Exception as err:  # noqa: BLE001 - a failing close must not block cleanup
                self.get_logger().error(f"{why}: policy.close() raised {type(err).__name__}: {err}")
        self.get_logger().info(f"{why}: robot stopped, policy released")

    # ------------------------------------------------------------------ shutdown path
    def stop_for_shutdown(self) -> None:
        """Mark the node shutting down and publish a zero (signal handler and main's finally)."""
        with self._cond:
            self._monitor.shutdown = True
            self._halt_locked(force=True)
            self._worker_stop = True
            self._cond.notify_all()

    def final_zero(self, ack_timeout: float = 0.5) -> None:
        """Publish a last zero and wait up to ``ack_timeout`` s for reliable readers to ack it.

        The sample is sent during ``publish`` (synchronous publishing); the wait only covers a
        retransmission, so its timeout is short.
        """
        with self._cond:
            self._monitor.shutdown = True
            self._motion_token += 1
            self._motion_active = False
            self._publish_cmd_locked(ZERO)
            publisher = self._cmd_pub
        if publisher is not None:
            try:
                publisher.wait_for_all_acked(Duration(seconds=ack_timeout))
            except Exception as err:  # noqa: BLE001 - destroyed meanwhile: nothing to wait for
                self.get_logger().debug(f"final zero: not waiting for acks ({err})")

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        arrival_ros = self.get_clock().now().nanoseconds * 1e-9
        with self._cond:
            self._frames_received += 1
        try:
            rgb = rgb_from_message(msg)
        except (ImageConversionError, ValueError) as err:
            with self._cond:
                self._frames_invalid += 1
                self._monitor.image_rejected(now, str(err))
            if self._limiter.allow(f"image:{err}", now):
                self.get_logger().warning(
                    f"bad image on {self._image_topic}: {err} (frame dropped)"
                )
            return
        ready = time.monotonic()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        transport_ms = (arrival_ros - stamp) * 1e3 if stamp > 0.0 else None
        info = self._camera_info
        if info is not None and info != (rgb.shape[1], rgb.shape[0]):
            if self._limiter.allow("camera_info_mismatch", now):
                self.get_logger().warning(
                    f"camera_info says {info[0]}x{info[1]} but images are "
                    f"{rgb.shape[1]}x{rgb.shape[0]}; check the camera driver"
                )
        with self._cond:
            self._frame_seq += 1
            self._frame = _Frame(rgb, stamp, now, ready, self._frame_seq, transport_ms)
            self._monitor.image_received(now)
            self._cond.notify_all()

    def _on_depth(self, msg: Image) -> None:
        now = time.monotonic()
        try:
            depth, invalid = depth_from_message(msg)
        except (ImageConversionError, ValueError) as err:
            if self._limiter.allow(f"depth:{err}", now):
                self.get_logger().warning(f"bad depth image: {err} (frame dropped)")
            return
        if invalid and self._limiter.allow("depth_invalid", now):
            self.get_logger().warning(
                f"depth image has {invalid} of {depth.size} pixels NaN/inf/negative; "
                "they are passed to the policy as 0 (no measurement)"
            )
        with self._cond:
            self._depth = (depth, now)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = (int(msg.width), int(msg.height))

    def _on_odom(self, msg: Odometry) -> None:
        now = time.monotonic()
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        values = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
        if not all(np.isfinite(values)):
            if self._limiter.allow("odom_nan", now):
                self.get_logger().warning(f"odometry with non-finite pose ignored: {values}")
            return
        pose = Pose2D(p.x, p.y, yaw_from_quaternion(q.x, q.y, q.z, q.w))
        with self._cond:
            self._odom = (pose, p.z, now)
            self._monitor.odom_received(now)

    def _on_instruction(self, msg: String) -> None:
        with self._cond:
            usable = self._monitor.set_instruction(msg.data)
            self._instruction_text = self._monitor.instruction or ""
            self._halt_locked(force=self._motion_active)
            self._pending_reset = usable
            self._episode_token += 1
            if usable:
                self._episode += 1
                self._step = 0
            episode = self._episode
            self._refresh_locked()
            self._publish_status_locked()
            self._cond.notify_all()
        if usable:
            self.get_logger().info(f"episode {episode}: instruction {self._instruction_text!r}")
        else:
            self.get_logger().warning(
                "empty instruction received: robot stopped, episode ended; publish a non-empty "
                "instruction to start a new episode"
            )

    def _on_instruction_qos(self, event) -> None:
        self.get_logger().error(
            "an instruction publisher has incompatible QoS (the navigator subscribes reliable + "
            "transient_local, depth 1): publish with durability transient_local"
        )

    def _on_estop(self, msg: Bool) -> None:
        engaged = bool(msg.data)
        with self._cond:
            changed = engaged != self._monitor.estop
            self._monitor.estop = engaged
            self._refresh_locked()
            self._cond.notify_all()
        if changed:
            self._log_at(WARN if engaged else OK,
                         "e-stop engaged: robot stopped" if engaged else "e-stop released")

    def _on_watchdog(self) -> None:
        with self._cond:
            self._refresh_locked()

    # ------------------------------------------------------------------ services
    def _srv_reset(self, request, response):
        with self._cond:
            if self._policy is None:
                response.success, response.message = False, "not configured"
                return response
            if self._monitor.instruction is None:
                response.success, response.message = False, "no instruction to restart with"
                return response
            self._halt_locked(force=self._motion_active)
            self._monitor.set_instruction(self._monitor.instruction)
            self._pending_reset = True
            self._episode_token += 1
            self._episode += 1
            self._step = 0
            self._refresh_locked()
            self._publish_status_locked()
            self._cond.notify_all()
            response.success, response.message = True, f"episode {self._episode} restarted"
        self.get_logger().info(response.message)
        return response

    def _srv_stop(self, request, response):
        with self._cond:
            if self._monitor.instruction is None:
                self._halt_locked(force=True)
                response.success, response.message = True, "stopped (no episode running)"
            else:
                self._monitor.end_episode(StopReason.STOPPED)
                self._episode_token += 1
                self._refresh_locked()
                response.success, response.message = True, "episode stopped"
        self.get_logger().info(f"stop service: {response.message}")
        return response

    def _srv_pause(self, request, response):
        with self._cond:
            self._monitor.paused = True
            self._refresh_locked()
        response.success, response.message = True, "paused"
        self.get_logger().info("paused by service call")
        return response

    def _srv_resume(self, request, response):
        with self._cond:
            self._monitor.paused = False
            self._refresh_locked()
            self._cond.notify_all()
        response.success, response.message = True, "resumed"
        self.get_logger().info("resumed by service call")
        return response

    # ------------------------------------------------------------------ parameters
    def _validate_parameters(self, parameters) -> SetParametersResult:
        """On-set: check each value, and the whole set when configured; reject with the reason."""
        changes = {p.name: p.value for p in parameters if p.name in PARAMETER_NAMES}
        try:
            validate_values(changes)
            if self._params is not None:
                self._params.replace(**changes)
        except NavigatorConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters) -> None:
        """Post-set: copy accepted values into the running configuration."""
        with self._cond:
            if self._params is None:
                return
            changes = {p.name: p.value for p in parameters if p.name in PARAMETER_NAMES}
            if not changes:
                return
            params = self._params.replace(**changes)
            self._params = params
            self._monitor.image_timeout = params.image_timeout
            self._monitor.policy_error_retry = params.policy_error_retry
            self._monitor.odom_timeout = params.odom_timeout
            self._monitor.require_odometry = params.motion_mode == "odometry"
        names = ", ".join(f"{p.name}={p.value!r}" for p in parameters)
        self.get_logger().info(f"parameters updated: {names}")

    # ------------------------------------------------------------------ state + publishing
    def _refresh_locked(self, now: float | None = None) -> StopReason:
        """Re-evaluate the safety rule; on any change of reason stop the robot and report."""
        reason, detail = self._monitor.evaluate(time.monotonic() if now is None else now)
        if reason != self._reason:
            previous, self._reason = self._reason, reason
            self._detail = detail
            if reason != StopReason.NONE:
                self._halt_locked(force=True)
                self._log_at(level(reason), f"robot held: {reason.value}: {detail}")
            elif previous != StopReason.NONE:
                self.get_logger().info(f"inputs ok again after {previous.value}: driving")
            self._publish_status_locked()
            self._publish_diagnostics_locked()
        else:
            self._detail = detail
        return reason

    def _log_at(self, severity: int, message: str) -> None:
        """Log at a diagnostics level (rclpy forbids one call site with varying severity)."""
        if severity == OK:
            self.get_logger().info(message)
        elif severity == WARN:
            self.get_logger().warning(message)
        else:
            self.get_logger().error(message)

    def _halt_locked(self, force: bool = True) -> None:
        """Cancel any motion and publish a zero (if publishing is possible)."""
        was_moving = self._motion_active
        self._motion_token += 1
        self._motion_active = False
        if was_moving:
            self._ready_after = time.monotonic() + (self._params.settle_time if self._params else 0)
        if force or was_moving:
            self._publish_cmd_locked(ZERO)
        self._cond.notify_all()

    def _publish_cmd_locked(self, velocity: Velocity) -> None:
        if self._cmd_pub is None:
            return
        twist = Twist()
        twist.linear.x = float(velocity.linear)
        twist.angular.z = float(velocity.angular)
        if self._params is not None and self._params.enable_stamped_cmd_vel:
            msg = TwistStamped()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = self._params.cmd_vel_frame_id
            msg.twist = twist
            self._cmd_pub.publish(msg)
        else:
            self._cmd_pub.publish(twist)

    def _status_locked(self) -> NavigatorStatus:
        return NavigatorStatus(
            state=self._state,
            episode=self._episode,
            step=self._step,
            action=self._last_action,
            driving=self._motion_active,
            stop_reason=self._reason.value,
            detail=self._detail,
            instruction=self._instruction_text,
            frame_stamp=self._last_frame_stamp,
            latency_ms=dict(self._last_latency),
            frames_received=self._frames_received,
            frames_invalid=self._frames_invalid,
            steps_discarded=self._steps_discarded,
            model=self._params.model if self._params else "",
        )

    def _publish_status_locked(self) -> None:
        if self._status_pub is not None:
            self._status_pub.publish(String(data=self._status_locked().to_json()))

    def _publish_diagnostics(self) -> None:
        with self._cond:
            self._publish_diagnostics_locked()

    def _publish_diagnostics_locked(self) -> None:
        if self._diag_pub is None:
            return
        status = self._status_locked()
        diag = DiagnosticStatus()
        diag.name = f"{self.get_fully_qualified_name()}: navigator"
        diag.hardware_id = status.model
        diag.level = _DIAG_LEVEL[level(self._reason)]
        diag.message = (
            "driving" if self._reason == StopReason.NONE
            else f"{self._reason.value}: {self._detail}"
        )
        values = {
            "state": status.state, "stop_reason": status.stop_reason, "detail": status.detail,
            "episode": status.episode, "step": status.step, "action": status.action,
            "instruction": status.instruction, "frames_received": status.frames_received,
            "frames_invalid": status.frames_invalid, "steps_discarded": status.steps_discarded,
            "last_image_error": self._monitor.image_error,
            "last_policy_error": self._monitor.policy_error,
        }
        values.update({f"latency_ms.{k}": f"{v:.3f}" for k, v in status.latency_ms.items()})
        diag.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [diag]
        self._diag_pub.publish(array)

    # ------------------------------------------------------------------ the policy worker
    def _work(self) -> None:
        """Worker thread: wait for a step to be possible, step, execute the motion; repeat."""
        while True:
            job = self._next_job()
            if job is None:
                return
            try:
                self._step_once(job)
            except Exception as err:  # noqa: BLE001 - the worker must survive anything
                with self._cond:
                    self._monitor.policy_failed(time.monotonic(), f"{type(err).__name__}: {err}")
                    self._refresh_locked()
                self.get_logger().error(f"navigator step failed: {traceback.format_exc()}")

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._worker_stop:
                now = time.monotonic()
                reason = self._refresh_locked(now)
                frame = self._frame
                max_steps = self._params.max_steps if self._params else 0
                if reason == StopReason.NONE and max_steps and self._step >= max_steps:
                    self._monitor.end_episode(StopReason.MAX_STEPS)  # e.g. after an aborted motion
                    continue
                if (
                    reason == StopReason.NONE
                    and not self._motion_active
                    and frame is not None
                    and frame.seq != self._last_used_seq
                    and frame.received >= self._ready_after
                ):
                    self._last_used_seq = frame.seq
                    depth = None
                    timeout = self._params.image_timeout
                    if self._depth is not None and now - self._depth[1] <= timeout:
                        depth = self._depth[0]
                    pose = None
                    if self._odom is not None and self._monitor.odom_fresh(now):
                        p, z, _ = self._odom
                        pose = (p.x, p.y, z, p.yaw)
                    job = _Job(
                        frame, depth, pose, self._monitor.instruction or "",
                        self._pending_reset, self._episode_token,
                    )
                    self._pending_reset = False
                    return job
                self._cond.wait(timeout=self._params.watchdog_period if self._params else 0.05)
        return None

    def _step_once(self, job: _Job) -> None:
        policy, params = self._policy, self._params
        if policy is None or params is None:
            return
        step_start = time.monotonic()
        try:
            if job.reset:
                policy.reset(job.instruction)
            observation = Observation(
                rgb=job.frame.rgb, depth=job.depth, pose=job.pose, stamp=job.frame.stamp
            )
            act_start = time.perf_counter()
            result = policy.act(observation)
            policy_ms = (time.perf_counter() - act_start) * 1e3
        except Exception as err:  # noqa: BLE001 - any policy fault stops the robot, node stays up
            now = time.monotonic()
            with self._cond:
                if job.reset and job.episode_token == self._episode_token:
                    self._pending_reset = True  # the reset did not happen; retry it
                self._monitor.policy_failed(now, f"{type(err).__name__}: {err}")
                self._refresh_locked(now)
            if self._limiter.allow(f"policy:{type(err).__name__}:{err}", now):
                self.get_logger().error(
                    f"policy raised {type(err).__name__}: {err}; robot stopped, retrying in "
                    f"{params.policy_error_retry:.1f} s\n{traceback.format_exc()}"
                )
            return
        act_end = time.monotonic()
        with self._cond:
            params = self._params or params  # parameters may have changed during act()
            self._monitor.policy_succeeded()
            reason = self._refresh_locked(act_end)
            if reason != StopReason.NONE or job.episode_token != self._episode_token:
                self._steps_discarded += 1
                why = reason.value if reason != StopReason.NONE else "new episode"
                self.get_logger().info(f"step result {result.action.name} discarded: {why}")
                self._publish_status_locked()
                return
            self._step += 1
            action = Action(result.action)
            self._last_action = action.name
            self._last_frame_stamp = job.frame.stamp
            self._action_pub.publish(String(data=action.name))
            segment = plan_motion(action, params.motion_limits())
            follower, token = None, self._motion_token
            if segment is None:
                self._monitor.end_episode(StopReason.EPISODE_DONE)
                self._publish_cmd_locked(ZERO)
            else:
                start_pose = None
                if params.motion_mode != "timed" and self._odom is not None:
                    if self._monitor.odom_fresh(act_end):
                        start_pose = self._odom[0]
                follower = make_follower(
                    segment, params.motion_limits(), 1.0 / params.control_rate, start_pose
                )
                self._motion_token += 1
                token = self._motion_token
                self._motion_active = True
                first, _ = follower.update(0.0, start_pose)
                self._publish_cmd_locked(first)
            cmd_time = time.monotonic()
            self._last_latency = self._latencies(job, step_start, policy_ms, act_end, cmd_time)
            self._last_latency.update(
                {f"policy.{k}": v * 1e3 for k, v in (result.timings or {}).items()}
            )
            if segment is None:
                self._refresh_locked(cmd_time)
            else:
                self._detail = f"{action.name}: {segment.target:.3f} over {segment.duration:.2f} s"
            self._publish_status_locked()
        if follower is not None:
            self._run_motion(follower, token, cmd_time, params)

    def _latencies(self, job: _Job, step_start, policy_ms, act_end, cmd_time) -> dict[str, float]:
        frame = job.frame
        latency = {
            "convert": (frame.ready - frame.received) * 1e3,
            "wait": (step_start - frame.ready) * 1e3,
            "policy": policy_ms,
            "command": (cmd_time - act_end) * 1e3,
            "receive_to_command": (cmd_time - frame.received) * 1e3,
        }
        if frame.transport_ms is not None:
            latency["transport"] = frame.transport_ms
            stamp_to_cmd = frame.transport_ms + latency["receive_to_command"]
            latency["stamp_to_command"] = stamp_to_cmd
            latency["overhead"] = stamp_to_cmd - policy_ms
        return latency

    def _run_motion(self, follower, token: int, start: float, params: NavigatorParams) -> None:
        """Stream the segment's commands at ``control_rate`` until done or cancelled."""
        dt = 1.0 / params.control_rate
        tick = 1
        with self._cond:
            while True:
                deadline = start + tick * dt
                while (
                    not self._worker_stop and token == self._motion_token
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    self._cond.wait(timeout=remaining)
                if self._worker_stop or token != self._motion_token:
                    return  # cancelled: whoever cancelled published the zero
                now = time.monotonic()
                pose = None
                if follower.closed_loop:
                    if self._odom is None or not self._monitor.odom_fresh(now):
                        self._halt_locked(force=True)
                        self._ready_after = now + params.settle_time
                        self.get_logger().warning(
                            "odometry went stale during a closed-loop motion: motion aborted"
                        )
                        self._publish_status_locked()
                        return
                    pose = self._odom[0]
                # timed: the nominal tick time, so the commands integrate to the planned
                # distance exactly under zero-order hold; closed loop: the real elapsed time
                t = now - start if follower.closed_loop else tick * dt
                velocity, outcome = follower.update(t, pose)
                self._publish_cmd_locked(velocity)
                if outcome != MotionOutcome.RUNNING:
                    self._motion_active = False
                    self._ready_after = time.monotonic() + params.settle_time
                    if outcome == MotionOutcome.TIMEOUT:
                        self._detail = "closed-loop motion timed out before reaching its goal"
                        self.get_logger().warning(
                            f"{StopReason.MOTION_TIMEOUT.value}: {self._detail}"
                        )
                    if params.max_steps and self._step >= params.max_steps:
                        self._monitor.end_episode(StopReason.MAX_STEPS)
                        self._refresh_locked()
                    self._publish_status_locked()
                    self._cond.notify_all()
                    return
                tick += 1


def main(args: list[str] | None = None) -> int:
    """Run the navigator until SIGINT/SIGTERM; the last velocity command it sends is a zero."""
    rclpy.init(args=sys.argv if args is None else args,
               signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    node: NavigatorNode | None = None
    executor: SingleThreadedExecutor | None = None
    spin_thread: threading.Thread | None = None

    def on_signal(signum, frame):
        if stop.is_set():
            return  # a second SIGINT (ros2 launch forwards one): already stopping
        stop.set()
        if node is not None:
            node.stop_for_shutdown()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        try:
            node = NavigatorNode()
        except NavigatorConfigError as err:
            get_logger(NODE_NAME).fatal(f"invalid parameters: {err}")
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)

        def spin():
            try:
                executor.spin()
            except ExternalShutdownException:
                pass

        spin_thread = threading.Thread(target=spin, name="navigator-executor")
        spin_thread.start()
        while not stop.wait(0.2):
            if not spin_thread.is_alive():
                node.get_logger().error("executor stopped unexpectedly; shutting down")
                code = 1
                break
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # shutdown has begun: no KeyboardInterrupt now
        if node is not None:
            node.stop_for_shutdown()
            node.final_zero()
        if executor is not None:
            executor.shutdown()
        if spin_thread is not None:
            spin_thread.join()
        if node is not None:
            try:
                node.trigger_shutdown()  # lifecycle -> finalized; releases the policy
            except Exception:  # noqa: BLE001 - already finalized: release directly
                node.on_shutdown(None)
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
