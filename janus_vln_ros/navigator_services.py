"""The navigator's services (``~/reset``, ``~/stop``, ``~/pause``, ``~/resume``) and parameters.

A mixin of :class:`janus_vln_ros.navigator_node.NavigatorNode` (it uses the node's state, set up
in its ``__init__``). The services exist for the node's whole life. Pause and stop decelerate
within the motion limits; a pause (like an e-stop) survives every lifecycle transition until
``~/resume``, which also releases the hold left by an e-stop release or a stale camera. Resume
does not release an engaged e-stop: only a false on the e-stop topic does.

Parameters follow the ros2/demos pattern: the on-set callback validates (each value, and the
whole set once configured) and rejects with the reason; the post-set callback applies.
"""

from __future__ import annotations

from rcl_interfaces.msg import SetParametersResult

from janus_vln_ros.params import PARAMETER_NAMES, NavigatorConfigError, validate_values
from janus_vln_ros.safety import StopReason


class NavigatorServices:
    """Service handlers and parameter callbacks (mixin; see module docstring)."""

    def _srv_reset(self, request, response):
        with self._cond:
            if self._policy is None:
                response.success, response.message = False, "not configured"
                return response
            if self._monitor.instruction is None:
                response.success, response.message = False, "no instruction to restart with"
                return response
            self._monitor.set_instruction(self._monitor.instruction)
            self._new_episode_locked()
            self._refresh_locked()
            self._publish_status_locked()
            self._cond.notify_all()
            response.success, response.message = True, f"episode {self._episode} restarted"
        self.get_logger().info(response.message)
        return response

    def _srv_stop(self, request, response):
        with self._cond:
            if self._monitor.instruction is None:
                self._brake_locked()
                response.success, response.message = True, "stopped (no episode running)"
            else:
                self._monitor.end_episode(StopReason.STOPPED)
                self._brake_locked()
                self._stop_after_motion = False
                self._last_action, self._last_probs = "", {}
                self._episode_token += 1
                self._refresh_locked()
                self._publish_status_locked()
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
            monitor = self._monitor
            if monitor.estop:
                response.success = False
                response.message = (
                    "e-stop is engaged: release it first (publish false on the e-stop topic), "
                    "then resume"
                )
            else:
                what = [w for w, on in (("pause", monitor.paused), ("hold", monitor.hold)) if on]
                monitor.resume()
                self._refresh_locked()
                self._publish_status_locked()
                self._cond.notify_all()
                response.success = True
                response.message = f"resumed ({', '.join(what)} cleared)" if what else "resumed"
        self.get_logger().info(f"resume service: {response.message}")
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
            changes = {p.name: p.value for p in parameters if p.name in PARAMETER_NAMES}
            if not changes:
                return
            if "require_resume" in changes:  # also before configure: the latches live on
                self._monitor.configure(require_resume=changes["require_resume"])
            if self._params is None:
                return
            params = self._params.replace(**changes)
            self._params = params
            self._monitor.configure(**params.safety_settings())
            if self._chain is not None:
                self._chain.limits = params.motion_limits()
                self._chain.dt = 1.0 / params.control_rate
                self._chain.blend = params.continuous_motion
            self._cond.notify_all()
        names = ", ".join(f"{p.name}={p.value!r}" for p in parameters)
        self.get_logger().info(f"parameters updated: {names}")
