"""The sim_bridge's episode loop against a navigator: pure logic, no rclpy, tested without ROS.

:class:`SimSession` runs a split's episodes one after another (a :class:`~sim_bridge.evaluate.
RunPlan` says which are left) through :class:`~sim_bridge.evaluate.EpisodeRunner`, so episodes
are executed, scored and recorded exactly as the in-process runner does. The node
(:mod:`janus_vln_ros.sim_bridge_node`) feeds it the navigator's messages and carries out what it
asks for through a :class:`BridgeOutput`.

The step handshake, deterministic by construction (one observation per step, one step per
observation):

1. **Instruct.** Publish the episode's instruction (latched) and wait until the navigator's
   status shows a new episode with that instruction at step 0 (:meth:`SimSession.on_status`).
   Only then publish the first observation, so the navigator cannot mix it into the previous
   episode. Unanswered for ``ack_timeout`` seconds: publish the instruction again.
2. **Act.** The navigator publishes its discrete action and a status record echoing the step
   number, the action and the header stamp of the frame it acted on. The action is executed when
   both are in and agree (:meth:`SimSession.on_action`), one simulator step.
3. **Next frame.** The next observation is published once a status record of that step says
   the navigator will step on a frame received from then on: ``awaiting_frame`` (in continuous
   motion right after the action was decided, while the robot still moves, so the next step is
   computed during the motion) or, with ``motion_source: cmd_vel`` (whose integration needs the
   motion to end first), ``driving`` false. A navigator with ``continuous_motion`` off only
   steps on frames received after its motion ended, which is when it reports
   ``awaiting_frame``.

Whatever breaks the chain restarts the episode from its start (a new *attempt*; the simulator and
the navigator's policy are both reset, so the retry is exactly a fresh episode): the navigator
restarting (a new status publisher, see ``session`` below), a navigator episode the bridge did not
start, a discarded step, a policy error, an action that does not match its status echo, no action
within ``step_timeout``. After ``max_attempts`` attempts the episode is recorded as an error.

A navigator *session* is one lifetime of its status publisher (the node passes the publisher GID):
records of a session older than the newest one seen come from a navigator that has been replaced
and are ignored.

Also here: the camera model (:func:`pinhole_intrinsics`) and the habitat -> ROS (REP 103) pose
conversion (:func:`habitat_to_ros_pose`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from janus_core.actions import Action
from janus_vln_ros.status import NavigatorStatus

log = logging.getLogger(__name__)

# the navigator's stop reasons that end its episode without a STOP action of ours
NAVIGATOR_EPISODE_ENDS = ("max_steps", "stopped")
STAMP_TOLERANCE = 2e-6  # s: status frame_stamp (float seconds) vs the stamp we published


class Phase(str, enum.Enum):
    """Where the session stands (the value is what ``~/progress`` shows)."""

    IDLE = "idle"  # not started (autostart off: waiting for ~/start)
    INSTRUCTING = "instructing"  # instruction published, waiting for the navigator's new episode
    WAIT_ACTION = "wait_action"  # observation published, waiting for the navigator's action
    WAIT_MOTION = "wait_motion"  # action executed, waiting for the navigator's motion to end
    DONE = "done"  # every episode of this shard has a result


class BridgeOutput(Protocol):
    """What the session asks its node to do."""

    def publish_instruction(self, text: str) -> None:
        """Publish the episode instruction (reliable, transient local)."""

    def publish_observation(self, obs: Any, stamp_ns: int) -> None:
        """Publish one observation (images, camera info, odometry) with this header stamp."""

    def publish_result(self, record: dict[str, Any]) -> None:
        """Publish a finished episode's record (already appended to the results file)."""

    def publish_progress(self, progress: dict[str, Any]) -> None:
        """Publish where the run stands (:meth:`SimSession.progress`)."""

    def finished(self, summary: dict[str, Any]) -> None:
        """Every episode has a result; ``summary`` is :func:`sim_bridge.evaluate.merge`'s."""


@dataclasses.dataclass(frozen=True)
class NavReport:
    """The fields of one navigator status record the session uses, plus its session key."""

    session: Hashable
    episode: int
    step: int
    action: str
    driving: bool
    stop_reason: str
    frame_stamp: float
    instruction: str
    steps_discarded: int
    detail: str = ""
    latency_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    awaiting_frame: bool = False

    @classmethod
    def from_status(cls, status: NavigatorStatus, session: Hashable) -> NavReport:
        """From a parsed :class:`~janus_vln_ros.status.NavigatorStatus`."""
        return cls(
            session=session, episode=int(status.episode), step=int(status.step),
            action=str(status.action), driving=bool(status.driving),
            stop_reason=str(status.stop_reason), frame_stamp=float(status.frame_stamp),
            instruction=str(status.instruction), steps_discarded=int(status.steps_discarded),
            detail=str(status.detail), latency_ms=dict(status.latency_ms or {}),
            awaiting_frame=bool(status.awaiting_frame),
        )


@dataclasses.dataclass
class _Attempt:
    """One try at the current episode."""

    number: int
    instruction: str
    known_episodes: dict[Hashable, int]  # navigator episode counters when we instructed
    deadline: float
    session: Hashable | None = None  # the navigator session that acknowledged it
    nav_episode: int | None = None
    discarded: int = 0  # the session's steps_discarded when acknowledged
    stamp_ns: int = 0  # header stamp of the observation awaiting an action
    action: str | None = None  # action topic message for the next step
    echo: NavReport | None = None  # status record of the next step (with its action)
    motion_over: bool = False  # a record of the next step says the next frame may be sent
    travel: float = 0.0  # cmd_vel mode: metres and radians the commands integrate to
    turn: float = 0.0
    moving: bool = False  # cmd_vel mode: a non-zero command came
    settled: bool = False  # cmd_vel mode: a zero command came after it


def pinhole_intrinsics(
    width: int, height: int, hfov_deg: float
) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` of the simulator camera: square pixels, centred principal point.

    The renderers use a symmetric frustum with horizontal field of view ``hfov_deg`` over the
    image width; pixel centres sit at integer coordinates (ROS/OpenCV), so the principal point is
    ``((w - 1) / 2, (h - 1) / 2)``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"camera size must be positive, got {width}x{height}")
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return fx, fx, (width - 1) / 2.0, (height - 1) / 2.0


def habitat_to_ros_pose(position, yaw: float) -> tuple[tuple[float, float, float], float]:
    """Habitat (y up, forward -z at yaw 0) position and yaw -> REP 103 (x forward, z up).

    ``(x, y, z)_ros = (-z, -x, y)_habitat``; both yaws are counter-clockwise seen from above
    and zero along the same direction, so the yaw is unchanged.
    """
    x, y, z = (float(v) for v in position)
    return (-z, -x, y), float(yaw)


def yaw_to_ros_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """``(x, y, z, w)`` of a rotation by ``yaw`` about +z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


class SimSession:
    """Runs ``plan``'s remaining episodes against a navigator (see the module docstring).

    ``plan``: a :class:`~sim_bridge.evaluate.RunPlan` (the session appends records through it).
    ``sim``: the simulator. ``output``: the node side. ``clock``: monotonic seconds for timeouts.
    ``stamp_clock``: wall-clock nanoseconds for observation stamps (made strictly increasing).
    ``motion_source``: ``action`` executes the navigator's action topic; ``cmd_vel`` executes
    what its velocity commands integrate to (:meth:`on_cmd_vel`), which must be one discrete step
    within ``cmd_vel_tolerance`` (a fraction of the step), else the step fails: the navigator's
    motion layer is then checked end to end. The simulator executes the discrete action either
    way, so both score the same.
    """

    def __init__(
        self,
        plan: Any,
        sim: Any,
        output: BridgeOutput,
        ack_timeout: float = 10.0,
        step_timeout: float = 300.0,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.monotonic,
        stamp_clock: Callable[[], int] = time.time_ns,
        motion_source: str = "action",
        cmd_vel_tolerance: float = 0.1,
    ):
        from sim_bridge.evaluate import EpisodeRunner, merge, record_header

        self._runner_cls, self._merge, self._header = EpisodeRunner, merge, record_header
        self.plan, self.sim, self.output = plan, sim, output
        self.ack_timeout, self.step_timeout = float(ack_timeout), float(step_timeout)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.max_attempts = int(max_attempts)
        self.clock, self.stamp_clock = clock, stamp_clock
        if motion_source not in ("action", "cmd_vel"):
            raise ValueError(f"motion_source must be 'action' or 'cmd_vel', got {motion_source!r}")
        self.motion_source, self.cmd_vel_tolerance = motion_source, float(cmd_vel_tolerance)
        self.phase = Phase.IDLE
        self.queue = []
        self.index = -1
        self.runner = None
        self.attempt: _Attempt | None = None
        self.summary: dict[str, Any] | None = None
        self._sessions: dict[Hashable, int] = {}  # session -> order first seen
        self._episodes: dict[Hashable, int] = {}  # session -> highest episode counter seen
        self._discarded: dict[Hashable, int] = {}  # session -> steps_discarded seen
        self._last_stamp = 0
        self._restarts = 0  # attempts of the current episode

    # ------------------------------------------------------------------ control
    def start(self) -> tuple[bool, str]:
        """Start running the shard's remaining episodes (``~/start``)."""
        if self.phase != Phase.IDLE:
            return False, f"already {self.phase.value}"
        self.queue = self.plan.todo()
        self.index = -1
        log.info("sim_bridge: %d of %d episodes to run", len(self.queue), len(self.plan.mine))
        self._next_episode()
        return True, f"running {len(self.queue)} episode(s)"

    def skip(self) -> tuple[bool, str]:
        """Record the current episode as ``skipped`` and go on with the next (``~/skip``)."""
        if self.runner is None or self.phase in (Phase.IDLE, Phase.DONE):
            return False, f"no episode running ({self.phase.value})"
        episode = self.runner.episode
        self._record_failure("skipped", "skipped by the ~/skip service")
        return True, f"episode {episode.episode_id} skipped"

    def reset_episode(self) -> tuple[bool, str]:
        """Restart the current episode from its start (``~/reset``); not counted as a failure."""
        if self.runner is None or self.phase in (Phase.IDLE, Phase.DONE):
            return False, f"no episode running ({self.phase.value})"
        episode = self.runner.episode
        if not self._begin_attempt():
            self._next_episode()
        return True, f"episode {episode.episode_id} restarted"

    def expert(self) -> dict[str, Any] | None:
        """The simulator expert's action for the observation awaiting an action, or None."""
        if self.phase != Phase.WAIT_ACTION or self.runner is None:
            return None
        action = Action(int(self.sim.expert_action()))
        return {
            "action": action.name,
            "stamp": self.attempt.stamp_ns * 1e-9,
            "stamp_ns": self.attempt.stamp_ns,
            "step": self.runner.num_steps,
            "episode_id": str(self.runner.episode.episode_id),
        }

    def progress(self) -> dict[str, Any]:
        """Where the run stands: phase, episode position, step, attempt, results so far."""
        episode = self.runner.episode if self.runner is not None else None
        mine = {ep.key for ep in self.plan.mine}
        finished = [r for k, r in self.plan.finished.items() if k in mine]
        return {
            "state": self.phase.value,
            "episode_id": str(episode.episode_id) if episode else "",
            "scene_id": str(episode.scene_id) if episode else "",
            "position": self.index + 1,
            "to_run": len(self.queue),
            "shard_episodes": len(self.plan.mine),
            "finished": len(finished),
            "ok": sum(1 for r in finished if r.get("status") == "ok"),
            "step": self.runner.num_steps if self.runner is not None else 0,
            "attempt": self.attempt.number if self.attempt is not None else 0,
        }

    # ------------------------------------------------------------------ navigator input
    def on_status(self, report: NavReport) -> None:
        """One navigator status record."""
        session = report.session
        if session not in self._sessions:
            self._sessions[session] = len(self._sessions)
            if len(self._sessions) > 1:
                log.info("sim_bridge: a new navigator status publisher (navigator restarted)")
        if self._sessions[session] < max(self._sessions.values()):
            return  # a navigator that has since been replaced
        self._episodes[session] = max(self._episodes.get(session, 0), report.episode)
        previous_discarded = self._discarded.get(session, 0)
        self._discarded[session] = max(previous_discarded, report.steps_discarded)
        attempt = self.attempt
        if attempt is None or self.runner is None:
            return
        if self.phase == Phase.INSTRUCTING:
            fresh = session not in attempt.known_episodes or (
                report.episode > attempt.known_episodes[session]
            )
            if fresh and report.step == 0 and report.instruction == attempt.instruction.strip():
                self._acknowledged(report)
            return
        if self.phase not in (Phase.WAIT_ACTION, Phase.WAIT_MOTION):
            return
        if session != attempt.session:
            self._retry("the navigator restarted (new status publisher)")
            return
        if report.episode != attempt.nav_episode:
            if report.episode > attempt.nav_episode:
                self._retry(f"the navigator started episode {report.episode}, not ours")
            return
        if report.steps_discarded > attempt.discarded:
            self._retry(
                "the navigator discarded a step (input went stale or an e-stop/pause came "
                "during the policy call; set the navigator's image_timeout above the policy's "
                f"step time): {report.stop_reason} {report.detail}"
            )
            return
        if report.stop_reason == "policy_error":
            self._retry(f"the navigator's policy failed: {report.detail}")
            return
        k = self.runner.num_steps
        if self.phase == Phase.WAIT_MOTION:
            if report.step == k and self._frame_wanted(report) and not (
                    self._navigator_ended(report)):
                self._publish_observation()
            return
        # WAIT_ACTION for step k + 1
        if report.step == k + 1 and report.action:
            if attempt.echo is None:
                attempt.echo = report
            if self._frame_wanted(report):
                attempt.motion_over = True
            self._try_execute()
        elif report.step == k and attempt.echo is None:
            if report.stop_reason == "stale_image":
                # the navigator either drops the step it is computing (a discard) or sits on a
                # stale frame: in both cases only a fresh start is deterministic
                self._retry(f"the navigator's camera input went stale: {report.detail} (set its "
                            "image_timeout above the policy's step time)")
                return
            self._navigator_ended(report)

    def _frame_wanted(self, report: NavReport) -> bool:
        """Whether the navigator will step on the next observation if it is published now."""
        if self.motion_source == "cmd_vel":
            return not report.driving  # the velocities of one step must end before the next
        return report.awaiting_frame or not report.driving

    def on_cmd_vel(self, linear: float, angular: float, dt: float) -> None:
        """One velocity command, held for ``dt`` seconds (``motion_source: cmd_vel``)."""
        attempt = self.attempt
        if self.motion_source != "cmd_vel" or attempt is None or self.phase != Phase.WAIT_ACTION:
            return
        if linear != 0.0 or angular != 0.0:
            attempt.travel += linear * dt
            attempt.turn += angular * dt
            attempt.moving = True
        elif attempt.moving:
            attempt.settled = True
            self._try_execute()

    def on_action(self, name: str) -> None:
        """One message of the navigator's discrete action topic."""
        attempt = self.attempt
        if self.motion_source != "action":
            return  # cmd_vel mode: the velocities say what happens
        if self.phase != Phase.WAIT_ACTION or attempt is None:
            log.debug("sim_bridge: action %s outside a step (%s): ignored", name, self.phase.value)
            return
        if attempt.action is not None:
            self._retry(f"two actions ({attempt.action}, {name}) for one observation")
            return
        attempt.action = name
        self._try_execute()

    def tick(self) -> None:
        """Check the timeouts (call periodically)."""
        attempt = self.attempt
        if attempt is None or self.clock() < attempt.deadline:
            return
        if self.phase == Phase.INSTRUCTING:
            log.warning(
                "sim_bridge: the navigator has not started episode %s within %.1f s; publishing "
                "the instruction again (is the navigator running, configured and subscribed?)",
                self.runner.episode.episode_id, self.ack_timeout,
            )
            self.output.publish_instruction(attempt.instruction)
            attempt.deadline = self.clock() + self.ack_timeout
        elif self.phase in (Phase.WAIT_ACTION, Phase.WAIT_MOTION):
            what = "an action" if self.phase == Phase.WAIT_ACTION else "the end of its motion"
            self._retry(f"no {what} from the navigator within step_timeout {self.step_timeout} s")

    # ------------------------------------------------------------------ internals
    def _next_episode(self) -> None:
        while True:  # a loop, not recursion: many episodes in a row may fail to load
            self.index += 1
            self.attempt, self.runner = None, None
            self._restarts = 0
            if self.index >= len(self.queue):
                self.phase = Phase.DONE
                self.summary = self._merge(self.plan.out)
                log.info("sim_bridge: split finished (%d records)", self.summary["finished"])
                self.output.publish_progress(self.progress())
                self.output.finished(self.summary)
                return
            if self._begin_attempt():
                return

    def _begin_attempt(self) -> bool:
        """Reset the simulator to the episode and instruct; False if the simulator failed."""
        episode = self.queue[self.index]
        self._restarts += 1
        try:
            self.runner = self._runner_cls(self.sim, episode, self.plan.cfg)
        except Exception as err:  # noqa: BLE001 - a bad episode must not stop the run
            self._record_error(episode, err)
            return False
        self.attempt = _Attempt(
            number=self._restarts,
            instruction=episode.instruction,
            known_episodes=dict(self._episodes),
            deadline=self.clock() + self.ack_timeout,
        )
        self.phase = Phase.INSTRUCTING
        log.info("sim_bridge: episode %s (%s), attempt %d: %r", episode.episode_id,
                 episode.scene_id, self._restarts, episode.instruction)
        self.output.publish_instruction(episode.instruction)
        self.output.publish_progress(self.progress())
        return True

    def _acknowledged(self, report: NavReport) -> None:
        attempt = self.attempt
        attempt.session, attempt.nav_episode = report.session, report.episode
        attempt.discarded = self._discarded.get(report.session, 0)
        self._publish_observation()

    def _publish_observation(self) -> None:
        attempt = self.attempt
        stamp = max(int(self.stamp_clock()), self._last_stamp + 1_000_000)  # >= 1 ms apart
        self._last_stamp = stamp
        attempt.stamp_ns = stamp
        attempt.action, attempt.echo, attempt.motion_over = None, None, False
        attempt.travel = attempt.turn = 0.0
        attempt.moving = attempt.settled = False
        attempt.deadline = self.clock() + self.step_timeout
        self.phase = Phase.WAIT_ACTION
        self.output.publish_observation(self.runner.obs, stamp)

    def _try_execute(self) -> None:
        attempt, runner = self.attempt, self.runner
        if self.motion_source == "cmd_vel":
            echo = attempt.echo
            if echo is None or (echo.action != "STOP" and not (
                    attempt.motion_over and attempt.settled)):
                return
            name, why = self._integrated_action(echo.action)
            if name is None:
                self._retry(why)
                return
            attempt.action = name
        if attempt.action is None or attempt.echo is None:
            return
        echo = attempt.echo
        if echo.action != attempt.action:
            source = "cmd_vel integrates to" if self.motion_source == "cmd_vel" else \
                "action topic says"
            self._retry(f"{source} {attempt.action} but the status says {echo.action}")
            return
        if abs(echo.frame_stamp - attempt.stamp_ns * 1e-9) > STAMP_TOLERANCE:
            self._retry(
                f"the navigator acted on frame stamped {echo.frame_stamp:.6f}, not on the "
                f"observation stamped {attempt.stamp_ns * 1e-9:.6f}"
            )
            return
        try:
            action = Action.from_name(attempt.action)
        except ValueError as err:
            self._retry(f"unknown action {attempt.action!r}: {err}")
            return
        latency = echo.latency_ms
        timings = {k[7:]: v * 1e-3 for k, v in latency.items() if k.startswith("policy.")}
        runner.add_policy_time(latency.get("policy", 0.0) * 1e-3, timings, parsed=None)
        try:
            runner.step(action)
        except Exception as err:  # noqa: BLE001 - a bad episode must not stop the run
            self._record_error(runner.episode, err)
            self._next_episode()
            return
        if runner.done:
            self._finish_episode()
        elif attempt.motion_over:
            self._publish_observation()
        else:
            self.phase = Phase.WAIT_MOTION
            attempt.deadline = self.clock() + self.step_timeout

    def _integrated_action(self, announced: str) -> tuple[str | None, str]:
        """The discrete action the integrated velocities amount to, or None and why not."""
        attempt, cfg, tol = self.attempt, self.plan.cfg, self.cmd_vel_tolerance
        step, angle = cfg.forward_step, math.radians(cfg.turn_angle)
        travel, turn = attempt.travel, attempt.turn
        moved, turned = abs(travel) > tol * step, abs(turn) > tol * angle
        if announced == "STOP" and not moved and not turned:
            return "STOP", ""
        if moved and not turned and abs(travel - step) <= tol * step:
            return "MOVE_FORWARD", ""
        if turned and not moved and abs(abs(turn) - angle) <= tol * angle:
            return ("TURN_LEFT" if turn > 0 else "TURN_RIGHT"), ""
        return None, (
            f"cmd_vel integrates to {travel:.3f} m and {math.degrees(turn):.1f} deg for "
            f"{announced}, not one step of {step} m or {cfg.turn_angle} deg (within "
            f"{100 * tol:.0f}%): check the navigator's motion limits and control_rate against "
            "cmd_vel_period"
        )

    def _navigator_ended(self, report: NavReport) -> bool:
        """End the episode if the navigator ended its own without STOP (step limit, ~/stop)."""
        if report.stop_reason not in NAVIGATOR_EPISODE_ENDS or report.driving:
            return False
        reason = "max_steps" if report.stop_reason == "max_steps" else "navigator_stopped"
        log.info("sim_bridge: the navigator ended episode %s (%s)",
                 self.runner.episode.episode_id, report.stop_reason)
        self.runner.end(reason)
        self._finish_episode()
        return True

    def _finish_episode(self) -> None:
        runner = self.runner
        record = self._header(runner.episode, self.plan.cfg, self.plan.shard)
        record.update(runner.result())
        self.plan.append(record)
        m = record["metrics"]
        log.info("sim_bridge: episode %s done (%s): SR %.0f SPL %.2f NE %.2f steps %d",
                 runner.episode.episode_id, record["end_reason"], m["sr"], m["spl"] or 0.0,
                 m["ne"], m["steps"])
        self.output.publish_result(record)
        self._next_episode()

    def _retry(self, why: str) -> None:
        episode = self.runner.episode
        if self._restarts >= self.max_attempts:
            log.error("sim_bridge: episode %s failed %d times, last: %s; recorded as an error",
                      episode.episode_id, self._restarts, why)
            self._record_failure("error", f"{why} (after {self._restarts} attempts)")
            return
        log.warning("sim_bridge: episode %s restarts from its start: %s", episode.episode_id, why)
        if not self._begin_attempt():
            self._next_episode()

    def _record_error(self, episode: Any, err: Exception) -> None:
        """The simulator raised: record an error as the in-process runner does."""
        log.exception("sim_bridge: episode %s (%s) failed", episode.episode_id, episode.scene_id)
        record = self._header(episode, self.plan.cfg, self.plan.shard)
        record.update({
            "status": "error",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=8)[-4000:],
        })
        self.plan.append(record)
        self.output.publish_result(record)

    def _record_failure(self, status: str, why: str) -> None:
        episode = self.runner.episode
        record = self._header(episode, self.plan.cfg, self.plan.shard)
        record.update({"status": status, "error": why, "steps_done": self.runner.num_steps})
        self.plan.append(record)
        self.output.publish_result(record)
        self._next_episode()


def expert_reply(answer: dict[str, Any] | None) -> tuple[bool, str]:
    """The ``~/expert_action`` Trigger response: (success, JSON or the reason there is none)."""
    if answer is None:
        return False, "no observation is waiting for an action"
    return True, json.dumps(answer, sort_keys=True)
