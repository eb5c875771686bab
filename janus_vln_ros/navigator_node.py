"""The ``navigator`` lifecycle node: camera + instruction in, bounded motion out, safely.

Lifecycle (ros2/demos lifecycle_py pattern):

* ``configure``: read and validate parameters (:mod:`janus_vln_ros.params`), build the policy
  from ``model`` (:mod:`janus_vln_ros.policy_factory`), create the camera/odometry inputs, the
  command outputs and timers, and start the two threads. Invalid parameters or a policy that
  fails to load give FAILURE with the reason in the log.
* ``activate``: start driving. ``deactivate``: zero velocity at once, keep the episode.
* ``cleanup``: zero velocity, stop the threads, free the policy. ``shutdown``: the same.

What lives as long as the node, not a configuration: the safety state (an engaged e-stop, a
pause and a hold stay across every transition, :mod:`janus_vln_ros.safety`), the instruction
and e-stop subscriptions, ``~/status``, ``/diagnostics`` and the services.

The node is split by concern, one mixin per file, all sharing the state set up here and one
condition variable (``self._cond``) that guards it:

* :mod:`janus_vln_ros.navigator_inputs`: subscription callbacks (never wait for the policy);
* :mod:`janus_vln_ros.navigator_stepping`: the policy worker thread;
* :mod:`janus_vln_ros.navigator_motion`: the motion thread streaming velocity commands, and how
  the robot stops (at once, or decelerating within the limits);
* :mod:`janus_vln_ros.navigator_services`: services and parameter callbacks;
* :mod:`janus_vln_ros.navigator_report`: the stop rule applied, status and /diagnostics.

SIGINT/SIGTERM: the handler marks the node shutting down and publishes a zero; the node then
stops, publishes a final zero and waits for it to be acknowledged, and ignores further signals
(ros2-env.md section 9), so the last command a robot receives is a zero.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from janus_vln_ros.motion import MotionChain, Pose2D
from janus_vln_ros.navigator_inputs import NavigatorInputs
from janus_vln_ros.navigator_motion import NavigatorMotion
from janus_vln_ros.navigator_report import NavigatorReporting
from janus_vln_ros.navigator_services import NavigatorServices
from janus_vln_ros.navigator_stepping import CameraFrame, NavigatorStepping
from janus_vln_ros.params import (
    NavigatorConfigError,
    NavigatorParams,
    declare_parameters,
    read_parameters,
)
from janus_vln_ros.policy_factory import make_policy
from janus_vln_ros.safety import LogLimiter, SafetyMonitor, StopReason

NODE_NAME = "navigator"


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


class NavigatorNode(
    NavigatorInputs, NavigatorStepping, NavigatorMotion, NavigatorServices, NavigatorReporting,
    LifecycleNode,
):
    """JanusVLN (or any janus_core Policy) driving a robot over ROS 2 topics.

    Topics (relative names, so a namespace applies; parameters rename the inputs and cmd_vel):
    subscribes ``camera/image_raw`` (or ``.../compressed``), ``camera/camera_info``,
    ``instruction`` (transient-local), ``odom``, ``estop``; publishes ``cmd_vel``,
    ``~/action``, ``~/status``, ``~/debug_image`` (parameter ``debug_image``) and
    ``/diagnostics``. Services: ``~/reset``, ``~/stop``, ``~/pause``, ``~/resume``
    (std_srvs/Trigger).
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        self._cond = threading.Condition()
        self._params: NavigatorParams | None = None
        self._policy = None
        self._monitor = SafetyMonitor()  # for the node's whole life: latches survive configure
        self._limiter = LogLimiter(period=5.0)
        self._state = "unconfigured"
        self._reason, self._detail = StopReason.INACTIVE, "node is not configured"
        # inputs
        self._frame: CameraFrame | None = None
        self._image_topic = ""
        self._frame_seq = 0
        self._last_used_seq = -1
        self._frames_after = 0.0  # frames received before this (monotonic) are not stepped on
        self._depth: tuple[np.ndarray, float] | None = None
        self._odom: tuple[Pose2D, float, float] | None = None  # pose, z, monotonic time
        self._camera_info: tuple[int, int] | None = None
        # episode
        self._pending_reset = False
        self._episode = 0
        self._episode_token = 0
        self._step = 0
        self._last_action = ""
        self._last_probs: dict[str, float] = {}
        self._step_time: float | None = None  # moving average of step durations, s
        # motion
        self._chain: MotionChain | None = None
        self._motion_token = 0
        self._motion_active = False
        self._next_tick = 0.0
        self._stop_after_motion = False  # STOP decided during a motion: end the episode after
        self._last_cmd_zero = True  # nothing published yet: the robot is assumed at rest
        # reporting
        self._frames_received = 0
        self._frames_invalid = 0
        self._steps_discarded = 0
        self._last_latency: dict[str, float] = {}
        self._last_frame_stamp = 0.0
        self._last_status_json = ""
        # threads and per-configuration interfaces
        self._worker: threading.Thread | None = None
        self._mover: threading.Thread | None = None
        self._threads_stop = False
        self._cmd_pub = self._action_pub = self._debug_pub = None
        self._status_pub = self._diag_pub = None
        self._nav_subs: list = []
        self._nav_timers: list = []
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._monitor.configure(require_resume=self.get_parameter("require_resume").value)
        self._create_lasting_interfaces()
        self._autostart_timer = None
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    def _create_lasting_interfaces(self) -> None:
        """What exists for the node's whole life: safety inputs, status, diagnostics, services."""
        value = self.get_parameter
        try:
            self._status_pub = self.create_publisher(String, "~/status", _qos(10))
            self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", _qos(10))
            self._lasting_subs = [
                self.create_subscription(
                    String, value("instruction_topic").value, self._on_instruction,
                    _qos(1, latched=True),
                    event_callbacks=SubscriptionEventCallbacks(
                        incompatible_qos=self._on_instruction_qos
                    ),
                ),
                self.create_subscription(
                    Bool, value("estop_topic").value, self._on_estop, _qos(10)
                ),
            ]
        except Exception as err:  # noqa: BLE001 - an invalid topic name is a parameter error
            raise NavigatorConfigError(
                f"instruction_topic / estop_topic: {type(err).__name__}: {err}"
            ) from None
        self._srv_handles = [
            self.create_service(Trigger, "~/reset", self._srv_reset),
            self.create_service(Trigger, "~/stop", self._srv_stop),
            self.create_service(Trigger, "~/pause", self._srv_pause),
            self.create_service(Trigger, "~/resume", self._srv_resume),
        ]
        self._diag_timer = self.create_timer(
            value("diagnostics_period").value, self._publish_diagnostics
        )

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
            self._monitor.configure(**params.safety_settings())
            self._chain = MotionChain(
                params.motion_limits(), 1.0 / params.control_rate, blend=params.continuous_motion
            )
            self._create_interfaces(params)
            if self._monitor.instruction is not None:  # a new policy: a new episode
                self._new_episode_locked()
            self._threads_stop = False
            self._state = "inactive"
            self._refresh_locked()
            self._publish_status_locked()
        self._worker = threading.Thread(target=self._work, name="navigator-policy", daemon=True)
        self._mover = threading.Thread(target=self._drive, name="navigator-motion", daemon=True)
        self._worker.start()
        self._mover.start()
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start driving."""
        with self._cond:
            self._monitor.active = True
            self._state = "active"
            self._refresh_locked()
            self._publish_status_locked()
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
            self._publish_status_locked()
        self.get_logger().info("deactivated: robot stopped")
        return super().on_deactivate(state)

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the robot, stop the threads, free the policy and the per-configuration topics."""
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
        if params.debug_image:
            # reliable: serves reliable (RViz default) and best-effort subscribers alike
            self._debug_pub = self.create_publisher(Image, "~/debug_image", _qos(1))
        image_qos = _qos(1, reliable=params.image_qos == "reliable")
        if params.image_transport == "compressed":
            image_topic = params.image_topic.rstrip("/") + "/compressed"
            image_type = CompressedImage
        else:
            image_topic, image_type = params.image_topic, Image
        image_sub = self.create_subscription(image_type, image_topic, self._on_image, image_qos)
        self._image_topic = image_sub.topic_name  # resolved, for log lines
        subs = [image_sub]
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
        self._nav_timers = [self.create_timer(params.watchdog_period, self._on_watchdog)]

    def _release(self, why: str) -> None:
        """Zero the robot, stop the threads, destroy the interfaces, close the policy."""
        self.get_logger().info(f"{why}: releasing")
        with self._cond:
            self._monitor.active = False
            self._halt_locked()
            self._threads_stop = True
            self._cond.notify_all()
        stuck = False
        for attr in ("_mover", "_worker"):
            thread = getattr(self, attr)
            setattr(self, attr, None)
            if thread is None:
                continue
            thread.join(timeout=10.0)
            if thread.is_alive():
                stuck = True
                self.get_logger().error(
                    f"{why}: thread {thread.name} still running after 10 s (inside the policy?); "
                    "leaving it (it can no longer publish)"
                )
        with self._cond:
            for entity in self._nav_subs:
                self.destroy_subscription(entity)
            for timer in self._nav_timers:
                self.destroy_timer(timer)
            self._nav_subs, self._nav_timers = [], []
            for pub in (self._cmd_pub, self._action_pub, self._debug_pub):
                if pub is not None:
                    self.destroy_publisher(pub)
            self._cmd_pub = self._action_pub = self._debug_pub = None
            policy, self._policy = self._policy, None
            self._frame, self._depth, self._odom = None, None, None
            self._state = "finalized" if why == "shutdown" else "unconfigured"
            self._refresh_locked()
            self._publish_status_locked()
        if policy is not None and not stuck:
            try:
                policy.close()
            except Exception as err:  # noqa: BLE001 - a failing close must not block cleanup
                self.get_logger().error(f"{why}: policy.close() raised {type(err).__name__}: {err}")
        self.get_logger().info(f"{why}: robot stopped, policy released")


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
