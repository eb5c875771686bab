"""The navigator's reporting: the stop rule applied, status records, /diagnostics, log levels.

A mixin of :class:`janus_vln_ros.navigator_node.NavigatorNode` (it uses the node's state, set up
in its ``__init__``; every ``*_locked`` method runs with ``self._cond`` held).

* :meth:`_refresh_locked` re-evaluates the safety rule; on a change of stop reason it stops the
  robot (a soft stop decelerates, anything else zeroes at once), logs the change once and
  publishes a status record and /diagnostics.
* Status records are never published twice in a row with the same content.
* /diagnostics is ERROR from a failed policy step until a step succeeds, whatever the stop
  reason shows meanwhile, with the last policy and image errors as values (the image error is
  cleared once a valid frame arrives).
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import String

from janus_vln_ros.safety import ERROR, OK, SOFT_STOP_REASONS, WARN, StopReason, level
from janus_vln_ros.status import NavigatorStatus

DIAG_LEVEL = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


class NavigatorReporting:
    """Stop-rule evaluation, status records and /diagnostics (mixin; see module docstring)."""

    def _refresh_locked(self, now: float | None = None) -> StopReason:
        """Re-evaluate the safety rule; on any change of reason stop the robot and report."""
        reason, detail = self._monitor.evaluate(time.monotonic() if now is None else now)
        if reason == self._reason:
            self._detail = detail
            return reason
        previous, self._reason, self._detail = self._reason, reason, detail
        if reason != StopReason.NONE:
            if reason in SOFT_STOP_REASONS:
                self._brake_locked()
            else:
                self._halt_locked()
            # a policy fault is logged (once per distinct error) where it happens: WARN here
            self._log_at(min(level(reason), WARN), f"robot held: {reason.value}: {detail}")
        elif previous != StopReason.NONE:
            self.get_logger().info(f"inputs ok again after {previous.value}: driving")
        self._publish_status_locked()
        self._publish_diagnostics_locked()
        return reason

    def _log_at(self, severity: int, message: str) -> None:
        """Log at a diagnostics level (rclpy forbids one call site with varying severity)."""
        if severity == OK:
            self.get_logger().info(message)
        elif severity == WARN:
            self.get_logger().warning(message)
        else:
            self.get_logger().error(message)

    def _awaiting_frame_locked(self) -> bool:
        """Whether a frame received from now on can be the next step's (status field)."""
        if self._state != "active" or self._stop_after_motion:
            return False
        if not self._motion_active:
            return True
        params = self._params
        return bool(params and params.continuous_motion and self._chain.steps_left <= 1)

    def _status_locked(self) -> NavigatorStatus:
        return NavigatorStatus(
            state=self._state,
            episode=self._episode,
            step=self._step,
            action=self._last_action,
            probs=dict(self._last_probs),
            driving=self._motion_active,
            awaiting_frame=self._awaiting_frame_locked(),
            stop_reason=self._reason.value,
            detail=self._detail,
            instruction=self._monitor.instruction or "",
            frame_stamp=self._last_frame_stamp,
            latency_ms=dict(self._last_latency),
            frames_received=self._frames_received,
            frames_invalid=self._frames_invalid,
            steps_discarded=self._steps_discarded,
            policy_failures=self._monitor.policy_failures,
            model=self._params.model if self._params else "",
        )

    def _publish_status_locked(self) -> None:
        """Publish the status record unless it equals the previous one."""
        if self._status_pub is None:
            return
        text = self._status_locked().to_json()
        if text == self._last_status_json:
            return
        self._last_status_json = text
        self._status_pub.publish(String(data=text))

    def _publish_diagnostics(self) -> None:
        with self._cond:
            self._publish_diagnostics_locked()

    def _publish_diagnostics_locked(self) -> None:
        if self._diag_pub is None:
            return
        status = self._status_locked()
        monitor = self._monitor
        diag = DiagnosticStatus()
        diag.name = f"{self.get_fully_qualified_name()}: navigator"
        diag.hardware_id = status.model
        severity = level(self._reason)
        if monitor.policy_faulted:
            severity = ERROR  # until a step succeeds, whatever else holds the robot
        diag.level = DIAG_LEVEL[severity]
        if self._reason == StopReason.NONE:
            diag.message = "driving"
        else:
            diag.message = f"{self._reason.value}: {self._detail}"
        if monitor.policy_faulted and self._reason != StopReason.POLICY_ERROR:
            diag.message += f" (and the policy is failing: {monitor.policy_error})"
        values = {
            "state": status.state, "stop_reason": status.stop_reason, "detail": status.detail,
            "episode": status.episode, "step": status.step, "action": status.action,
            "instruction": status.instruction, "frames_received": status.frames_received,
            "frames_invalid": status.frames_invalid, "steps_discarded": status.steps_discarded,
            "estop": monitor.estop, "paused": monitor.paused,
            "hold": monitor.hold.value if monitor.hold else "",
            "last_image_error": monitor.image_error,
            "last_policy_error": monitor.policy_error,
            "policy_failures": monitor.policy_failures,
        }
        values.update({f"latency_ms.{k}": f"{v:.3f}" for k, v in status.latency_ms.items()})
        diag.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [diag]
        self._diag_pub.publish(array)
