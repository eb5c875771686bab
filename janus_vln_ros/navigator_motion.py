"""The navigator's motion: the thread that streams velocity commands, and how the robot stops.

A mixin of :class:`janus_vln_ros.navigator_node.NavigatorNode` (it uses the node's state, set up
in its ``__init__``; every ``*_locked`` method runs with ``self._cond`` held).

The motion thread executes the node's :class:`janus_vln_ros.motion.MotionChain` one control tick
at a time (``control_rate``), publishing each command under the lock and tagged with the motion
token it belongs to, so nothing stale follows a stop. Three ways to stop:

* :meth:`_halt_locked`: at once (e-stop, stale or bad camera, policy fault, deactivate,
  shutdown): the motion is dropped and a zero is published in the same critical section.
* :meth:`_brake_locked`: within the limits (pause, ~/stop, end of episode, a new instruction):
  the chain decelerates at the configured acceleration; the thread publishes the ramp, then a
  zero.
* the end of the chain: the last segment ends at rest and a zero follows.

A zero is never published twice in a row (:meth:`_publish_cmd_locked`), except the final zero
at shutdown (:meth:`final_zero`), which is also waited on until acknowledged.
"""

from __future__ import annotations

import time

from geometry_msgs.msg import Twist, TwistStamped
from rclpy.duration import Duration

from janus_vln_ros.motion import ZERO, MotionOutcome, Velocity
from janus_vln_ros.safety import StopReason


class NavigatorMotion:
    """The motion thread and the three ways to stop (mixin; see module docstring)."""

    def _drive(self) -> None:
        """Motion thread: one chain tick per control period while a motion runs."""
        with self._cond:
            while not self._threads_stop:
                if not self._motion_active:
                    self._cond.wait(timeout=0.5)
                    continue
                token = self._motion_token
                while (
                    not self._threads_stop and token == self._motion_token
                    and (remaining := self._next_tick - time.monotonic()) > 0
                ):
                    self._cond.wait(timeout=remaining)
                if self._threads_stop or token != self._motion_token:
                    continue  # stopped: whoever stopped it published the zero
                self._tick_locked(time.monotonic())

    def _motion_pose_locked(self, now: float):
        """The odometry pose for the chain (closed loop), or None for timed motion."""
        params = self._params
        if params.motion_mode == "timed" or self._odom is None:
            return None
        return self._odom[0] if self._monitor.odom_fresh(now) else None

    def _tick_locked(self, now: float) -> None:
        chain, params = self._chain, self._params
        pose = self._motion_pose_locked(now)
        if chain.follower is not None and chain.follower.closed_loop and pose is None:
            self._halt_locked()
            self.get_logger().warning(
                "odometry went stale during a closed-loop motion: motion aborted"
            )
            self._publish_status_locked()
            return
        steps_before = chain.steps_left
        velocity, outcome = chain.update(now, pose)
        self._publish_cmd_locked(velocity)
        period = chain.period
        self._next_tick += period
        if now - self._next_tick > period:  # fell behind (a stalled thread): no burst
            self._next_tick = now + period
        if outcome != MotionOutcome.RUNNING:
            self._motion_ended_locked(outcome, now, params)
        elif chain.steps_left != steps_before:
            self._publish_status_locked()  # a step's distance is done: awaiting_frame may change
            self._cond.notify_all()

    def _start_motion_locked(self, segment, now: float) -> None:
        """Start the chain from rest with ``segment``; publish its first command now."""
        self._chain.push(segment, self._motion_pose_locked(now), now)
        velocity, _ = self._chain.update(now, self._motion_pose_locked(now))
        self._motion_token += 1
        self._motion_active = True
        self._publish_cmd_locked(velocity)
        self._next_tick = now + self._chain.period
        self._cond.notify_all()

    def _motion_ended_locked(self, outcome: MotionOutcome, now: float, params) -> None:
        self._motion_active = False
        self._chain.clear()
        if not params.continuous_motion:
            self._frames_after = max(self._frames_after, now + params.settle_time)
        if outcome == MotionOutcome.TIMEOUT:
            self._detail = "closed-loop motion timed out before reaching its goal"
            self.get_logger().warning(f"{StopReason.MOTION_TIMEOUT.value}: {self._detail}")
        if self._stop_after_motion:
            self._stop_after_motion = False
            self._monitor.end_episode(StopReason.EPISODE_DONE)
        elif params.max_steps and self._step >= params.max_steps:
            self._monitor.end_episode(StopReason.MAX_STEPS)
        self._refresh_locked(now)
        self._publish_status_locked()
        self._cond.notify_all()

    def _halt_locked(self) -> None:
        """Stop at once: drop the motion and publish a zero (if publishing is possible)."""
        was_moving = self._motion_active
        self._motion_token += 1
        self._motion_active = False
        if self._chain is not None:
            self._chain.clear()
        if self._stop_after_motion:  # STOP was decided: the episode is over
            self._stop_after_motion = False
            self._monitor.end_episode(StopReason.EPISODE_DONE)
        if was_moving:
            settle = self._params.settle_time if self._params else 0.0
            self._frames_after = max(self._frames_after, time.monotonic() + settle)
            self._last_action = ""
        self._publish_cmd_locked(ZERO)
        self._cond.notify_all()

    def _brake_locked(self) -> None:
        """Stop within the acceleration limits: the motion thread publishes the ramp down."""
        if self._motion_active and self._chain is not None and not self._chain.braking:
            self._chain.brake()
            self._last_action = ""
            self._cond.notify_all()

    def _publish_cmd_locked(self, velocity: Velocity, force: bool = False) -> None:
        """Publish one command; a zero right after a zero is skipped unless ``force``."""
        if self._cmd_pub is None:
            return
        if velocity.is_zero and self._last_cmd_zero and not force:
            return
        self._last_cmd_zero = velocity.is_zero
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

    # ------------------------------------------------------------------ shutdown path
    def stop_for_shutdown(self) -> None:
        """Mark the node shutting down and zero the robot (signal handler and main's finally)."""
        with self._cond:
            self._monitor.shutdown = True
            self._halt_locked()
            self._threads_stop = True
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
            self._publish_cmd_locked(ZERO, force=True)
            publisher = self._cmd_pub
        if publisher is not None:
            try:
                publisher.wait_for_all_acked(Duration(seconds=ack_timeout))
            except Exception as err:  # noqa: BLE001 - destroyed meanwhile: nothing to wait for
                self.get_logger().debug(f"final zero: not waiting for acks ({err})")
