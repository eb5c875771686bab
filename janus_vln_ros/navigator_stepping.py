"""The navigator's policy steps: the worker thread that turns the newest frame into an action.

A mixin of :class:`janus_vln_ros.navigator_node.NavigatorNode` (it uses the node's state, set up
in its ``__init__``; every ``*_locked`` method runs with ``self._cond`` held).

The worker waits until a step may start, captures everything the step needs under the lock
(:class:`StepJob`), calls ``Policy.act`` without the lock, and hands the action to the motion
(:mod:`janus_vln_ros.navigator_motion`) under the lock again, unless the episode changed or the
robot was stopped meanwhile (the result is then discarded and counted).

When may a step start? Nothing may forbid motion (:mod:`janus_vln_ros.safety`; a failed policy
is retried once its backoff is over), and there must be a camera frame not used before and
received after ``_frames_after``:

* ``continuous_motion`` (default): frames received since the last action was decided count, and
  the step starts while the current motion runs, once the robot executes its last decided
  action and the time before it must start decelerating is no longer than a step takes (a
  moving average of the measured step time): the decision uses the newest frame and is ready
  before the robot would slow down. A
  same-direction action then blends into the running motion (:class:`janus_vln_ros.motion.
  MotionChain`); STOP ends the episode when the motion ends.
* ``continuous_motion: false``: only at rest, on a frame received ``settle_time`` after the
  motion ended.
"""

from __future__ import annotations

import dataclasses
import time
import traceback

import numpy as np
from std_msgs.msg import String

from janus_core.actions import Action
from janus_core.interface import Observation
from janus_vln_ros.conversions import numpy_to_image
from janus_vln_ros.motion import plan_motion
from janus_vln_ros.overlay import draw_overlay
from janus_vln_ros.safety import StopReason

STEP_TIME_SMOOTHING = 0.3  # weight of the newest step in the moving average of step times


@dataclasses.dataclass
class CameraFrame:
    """The latest valid camera frame."""

    rgb: np.ndarray
    stamp: float  # header stamp, seconds (0 when the camera leaves it unset)
    received: float  # monotonic, callback entry
    ready: float  # monotonic, after conversion
    seq: int
    transport_ms: float | None  # header stamp to callback entry (shared clock needed)


@dataclasses.dataclass
class StepJob:
    """Everything one step needs, captured under the lock."""

    frame: CameraFrame
    depth: np.ndarray | None
    pose: tuple[float, float, float, float] | None
    instruction: str
    reset: bool
    episode_token: int


class NavigatorStepping:
    """The policy worker thread (mixin; see module docstring)."""

    def _work(self) -> None:
        """Worker thread: wait for a step to be possible, run it, hand over the action; repeat."""
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

    def _lead_time(self) -> float:
        """How long before the motion ends the next step starts (continuous motion)."""
        if self._step_time is None:
            return float("inf")  # not measured yet: start at once
        return 1.2 * self._step_time + self._chain.period

    def _motion_wait_locked(self) -> float:
        """0 when the motion lets a step start now, else seconds until it may (roughly)."""
        if not self._motion_active:
            return 0.0
        params = self._params
        if not params.continuous_motion or self._chain.steps_left > 1:
            return params.watchdog_period
        left = self._chain.time_to_brake() - self._lead_time()
        return 0.0 if left <= 0.0 else left

    def _next_job(self) -> StepJob | None:
        with self._cond:
            while not self._threads_stop:
                now = time.monotonic()
                reason = self._refresh_locked(now)
                params = self._params
                wait = params.watchdog_period
                ok = reason == StopReason.NONE or (
                    reason == StopReason.POLICY_ERROR and self._monitor.may_step(now)
                )
                if ok and params.max_steps and self._step >= params.max_steps:
                    if not self._motion_active:
                        self._monitor.end_episode(StopReason.MAX_STEPS)
                        continue
                    ok = False  # the last step's motion finishes first
                if ok and not self._stop_after_motion:
                    motion_wait = self._motion_wait_locked()
                    frame = self._frame
                    if (
                        motion_wait == 0.0 and frame is not None
                        and frame.seq != self._last_used_seq
                        and frame.received >= self._frames_after
                    ):
                        return self._take_job_locked(frame, now)
                    if motion_wait:
                        wait = min(wait, motion_wait)
                elif reason == StopReason.POLICY_ERROR:
                    wait = min(wait, max(0.001, self._monitor.policy_retry_at - now))
                self._cond.wait(timeout=wait)
        return None

    def _take_job_locked(self, frame: CameraFrame, now: float) -> StepJob:
        self._last_used_seq = frame.seq
        depth = None
        if self._depth is not None and now - self._depth[1] <= self._params.image_timeout:
            depth = self._depth[0]
        pose = None
        if self._odom is not None and self._monitor.odom_fresh(now):
            p, z, _ = self._odom
            pose = (p.x, p.y, z, p.yaw)
        job = StepJob(
            frame, depth, pose, self._monitor.instruction or "", self._pending_reset,
            self._episode_token,
        )
        self._pending_reset = False
        return job

    def _step_once(self, job: StepJob) -> None:
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
            self._policy_failed(job, err)
            return
        act_end = time.monotonic()
        with self._cond:
            params = self._params or params  # parameters may have changed during act()
            self._monitor.policy_succeeded()
            elapsed = act_end - step_start
            self._step_time = elapsed if self._step_time is None else (
                (1.0 - STEP_TIME_SMOOTHING) * self._step_time + STEP_TIME_SMOOTHING * elapsed
            )
            reason = self._refresh_locked(act_end)
            if reason != StopReason.NONE or job.episode_token != self._episode_token:
                self._steps_discarded += 1
                why = reason.value if reason != StopReason.NONE else "new episode"
                self.get_logger().info(f"step result {result.action.name} discarded: {why}")
                self._publish_status_locked()
                return
            policy_stages = {f"policy.{k}": v * 1e3 for k, v in (result.timings or {}).items()}
            self._last_latency = {
                **self._latencies(job, step_start, policy_ms, act_end, act_end), **policy_stages
            }  # for a record published while the action is handed over
            action = self._accept_locked(job, result, params, act_end)
            cmd_time = time.monotonic()
            self._last_latency = {
                **self._latencies(job, step_start, policy_ms, act_end, cmd_time), **policy_stages
            }
            self._publish_status_locked()
            instruction, step, probs = job.instruction, self._step, dict(self._last_probs)
            debug_pub = self._debug_pub
        if debug_pub is not None:
            overlay = draw_overlay(job.frame.rgb, instruction, step, action.name, probs)
            msg = numpy_to_image(overlay, "rgb8", frame_id="camera")
            msg.header.stamp.sec = int(job.frame.stamp)
            msg.header.stamp.nanosec = int(round((job.frame.stamp % 1.0) * 1e9)) % 1_000_000_000
            debug_pub.publish(msg)

    def _accept_locked(self, job: StepJob, result, params, now: float) -> Action:
        """Count the step, publish the action and hand its motion over (lock held)."""
        self._step += 1
        action = Action(result.action)
        self._last_action = action.name
        self._last_probs = {str(k): float(v) for k, v in (result.probs or {}).items()}
        self._last_frame_stamp = job.frame.stamp
        self._action_pub.publish(String(data=action.name))
        segment = plan_motion(action, params.motion_limits())
        if params.continuous_motion:
            self._frames_after = max(self._frames_after, now)
        if segment is None:
            if self._motion_active:  # continuous: the episode ends when the motion has
                self._stop_after_motion = True
            else:
                self._publish_status_locked()  # the step's record (action STOP) first
                self._monitor.end_episode(StopReason.EPISODE_DONE)
                self._refresh_locked(now)
            return action
        if self._motion_active:
            self._chain.push(segment, None, now)
            self._detail = f"{action.name}: queued after the running motion"
        else:
            self._start_motion_locked(segment, now)
            self._detail = f"{action.name}: {segment.target:.3f} over {segment.duration:.2f} s"
        return action

    def _policy_failed(self, job: StepJob, err: Exception) -> None:
        now = time.monotonic()
        text = f"{type(err).__name__}: {err}"
        with self._cond:
            if job.reset and job.episode_token == self._episode_token:
                self._pending_reset = True  # the reset did not happen; retry it
            new = self._monitor.policy_failed(now, text)
            wait = self._monitor.policy_retry_at - now
            failures = self._monitor.policy_failures
            self._refresh_locked(now)
            self._publish_status_locked()
            self._publish_diagnostics_locked()
        if new:
            self.get_logger().error(
                f"policy raised {text}; robot stopped, next try in {wait:.1f} s (the wait doubles "
                f"while it keeps failing; this error is logged once)\n{traceback.format_exc()}"
            )
        else:
            self.get_logger().debug(f"policy raised {text} again ({failures} in a row)")

    def _latencies(self, job: StepJob, step_start, policy_ms, act_end, cmd_time) -> dict:
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
