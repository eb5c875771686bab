"""The navigator's inputs: camera, depth, odometry, instruction and e-stop callbacks.

A mixin of :class:`janus_vln_ros.navigator_node.NavigatorNode` (it uses the node's state, set up
in its ``__init__``). Callbacks run on the executor thread and never wait for the policy.

* Camera frames of any size are accepted within ``min_image_side`` and ``max_image_pixels``
  (checked before a raw image is converted): the policy brings them to its input
  (:mod:`janus_core.processor`). Invalid frames are dropped with a warning per distinct error
  every 5 s; only the newest valid frame is kept.
* An instruction starts a new episode (the running motion decelerates); an empty one ends the
  episode. The instruction and e-stop subscriptions live as long as the node, so neither is
  missed or forgotten across lifecycle transitions.
"""

from __future__ import annotations

import time

import numpy as np
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Bool, String

from janus_vln_ros.conversions import ImageConversionError
from janus_vln_ros.frames import check_frame_size, depth_from_message, rgb_from_message
from janus_vln_ros.motion import Pose2D, yaw_from_quaternion
from janus_vln_ros.navigator_stepping import CameraFrame
from janus_vln_ros.safety import OK, WARN


class NavigatorInputs:
    """Subscription callbacks (mixin; see module docstring)."""

    def _image_limits(self) -> tuple[int, int]:
        params = self._params
        return (params.min_image_side, params.max_image_pixels) if params else (1, 2**62)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        arrival_ros = self.get_clock().now().nanoseconds * 1e-9
        with self._cond:
            self._frames_received += 1
        min_side, max_pixels = self._image_limits()
        try:
            if isinstance(msg, Image) and msg.width > 0 and msg.height > 0:
                check_frame_size(int(msg.width), int(msg.height), min_side, max_pixels)
            rgb = rgb_from_message(msg)
            if isinstance(msg, CompressedImage):
                check_frame_size(rgb.shape[1], rgb.shape[0], min_side, max_pixels)
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
            self._frame = CameraFrame(rgb, stamp, now, ready, self._frame_seq, transport_ms)
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
            self._new_episode_locked(count=usable)
            self._frames_after = max(self._frames_after, time.monotonic())
            episode, text = self._episode, self._monitor.instruction or ""
            self._refresh_locked()
            self._publish_status_locked()
            self._cond.notify_all()
        if usable:
            self.get_logger().info(f"episode {episode}: instruction {text!r}")
        else:
            self.get_logger().warning(
                "empty instruction received: robot stopped, episode ended; publish a non-empty "
                "instruction to start a new episode"
            )

    def _new_episode_locked(self, count: bool = True) -> None:
        """End the current episode (the motion decelerates); ``count``: a new one starts."""
        self._brake_locked()
        self._stop_after_motion = False
        self._last_action, self._last_probs = "", {}
        self._episode_token += 1
        self._pending_reset = count
        if count:
            self._episode += 1
            self._step = 0

    def _on_instruction_qos(self, event) -> None:
        self.get_logger().error(
            "an instruction publisher has incompatible QoS (the navigator subscribes reliable + "
            "transient_local, depth 1): publish with durability transient_local"
        )

    def _on_estop(self, msg: Bool) -> None:
        engaged = bool(msg.data)
        with self._cond:
            changed = self._monitor.set_estop(engaged)
            held = self._monitor.hold is not None
            self._refresh_locked()
            self._publish_status_locked()
            self._cond.notify_all()
        if not changed:
            return
        if engaged:
            self._log_at(WARN, "e-stop engaged: robot stopped until the e-stop is released")
        elif held:
            self._log_at(OK, "e-stop released: call ~/resume or send a new instruction to drive")
        else:
            self._log_at(OK, "e-stop released")

    def _on_watchdog(self) -> None:
        with self._cond:
            self._refresh_locked()
