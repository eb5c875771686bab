"""The sim_bridge's episode loop and handshake (janus_vln_ros/sim_session.py), without ROS.

A scripted navigator speaks the real navigator's protocol (one status record at the start of an
episode, then per step the action, a status record echoing step, action and frame stamp, and a
status record when the motion ends) and drives the session with the simulator's expert. The
records must equal the in-process runner's, whatever the delivery order, and every way the chain
can break (restart, discard, policy error, mismatch, timeouts) must end in a clean retry.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from janus_core.actions import Action
from janus_vln_ros.motion import MotionLimits, MotionOutcome, TimedFollower, plan_motion
from janus_vln_ros.sim_session import (
    NavReport,
    Phase,
    SimSession,
    expert_reply,
    habitat_to_ros_pose,
    pinhole_intrinsics,
    yaw_to_ros_quaternion,
)
from sim_bridge.evaluate import EvalConfig, evaluate, make_sim, plan_run
from sim_bridge.generate import GenerateConfig, generate_dataset
from sim_bridge.results import read_records

VOLATILE = ("timings", "finished_at", "shard", "parse_failures")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    cfg = GenerateConfig(splits={"val_unseen": 3}, seed=5, episodes_per_scene=3,
                         min_geodesic=3.0, max_geodesic=5.0, mean_geodesic=4.0)
    return generate_dataset(out, cfg)["val_unseen"]


def eval_cfg(split, out, **kw):
    base = dict(policy="expert", split=str(split), output_dir=str(out), sim={"render": False},
                progress=False)
    base.update(kw)
    return EvalConfig(**base)


@pytest.fixture(scope="module")
def reference(split, tmp_path_factory):
    """The in-process runner's records for the expert on the split."""
    out = tmp_path_factory.mktemp("inproc")
    evaluate(eval_cfg(split, out))
    return {r["episode_id"]: r for r in read_records(out / "results" / "shard-000-of-001.jsonl")}


def stable(record):
    return {k: v for k, v in record.items() if k not in VOLATILE}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Bus:
    """The node side: records what the session asks to publish."""

    def __init__(self):
        self.outbox, self.results, self.progress, self.summaries = [], [], [], []
        self.instructions = self.observations = 0

    def publish_instruction(self, text):
        self.instructions += 1
        self.outbox.append(("instruction", text))

    def publish_observation(self, obs, stamp_ns):
        self.observations += 1
        self.outbox.append(("observation", stamp_ns))

    def publish_result(self, record):
        self.results.append(record)

    def publish_progress(self, progress):
        self.progress.append(progress)

    def finished(self, summary):
        self.summaries.append(summary)


class FakeNavigator:
    """The navigator's status/action protocol, scripted; the policy is the simulator's expert."""

    def __init__(self, sim, name="nav-1"):
        self.sim, self.session = sim, name
        self.episode = self.step = self.discarded = 0
        self.instruction, self.action = "", ""
        self.outbox: list[tuple[str, object]] = []
        self.policy = lambda: Action(int(sim.expert_action()))

    def report(self, **kw):
        base = dict(session=self.session, episode=self.episode, step=self.step,
                    action=self.action, driving=False, stop_reason="none", frame_stamp=0.0,
                    instruction=self.instruction, steps_discarded=self.discarded,
                    latency_ms={"policy": 2.0, "policy.expert": 1.0})
        base.update(kw)
        return NavReport(**base)

    def on_instruction(self, text):
        self.episode += 1
        self.step, self.instruction, self.action = 0, text.strip(), ""
        self.outbox.append(("status", self.report()))

    def on_observation(self, stamp_ns):
        action = self.policy()
        self.step += 1
        self.action = action.name
        moving = action != Action.STOP
        self.outbox.append(("action", action.name))
        self.outbox.append(("status", self.report(
            driving=moving, frame_stamp=stamp_ns * 1e-9,
            stop_reason="none" if moving else "episode_done")))
        if moving:
            self.outbox.append(("status", self.report(frame_stamp=stamp_ns * 1e-9)))

    def deliver(self, kind, payload):
        if kind == "instruction":
            self.on_instruction(payload)
        else:
            self.on_observation(payload)


class ContinuousNavigator(FakeNavigator):
    """Continuous motion: the echo already says a frame may come while the robot moves, and no
    record says the motion ended before the next action is decided."""

    def on_observation(self, stamp_ns):
        action = self.policy()
        self.step += 1
        self.action = action.name
        moving = action != Action.STOP
        self.outbox.append(("action", action.name))
        self.outbox.append(("status", self.report(
            driving=True, awaiting_frame=moving, frame_stamp=stamp_ns * 1e-9,
            stop_reason="none")))


class VelocityNavigator(FakeNavigator):
    """Also streams the timed velocity profile of each motion (janus_vln_ros.motion)."""

    def __init__(self, sim, limits, dt):
        super().__init__(sim)
        self.limits, self.dt = limits, dt

    def on_observation(self, stamp_ns):
        super().on_observation(stamp_ns)
        segment = plan_motion(Action[self.action], self.limits)
        if segment is None:
            return
        follower, tick, commands = TimedFollower(segment, self.dt), 0, []
        while True:  # what the navigator's _run_motion publishes, ending with a zero
            velocity, outcome = follower.update(tick * self.dt)
            commands.append(("cmd", (velocity.linear, velocity.angular)))
            if outcome != MotionOutcome.RUNNING:
                break
            tick += 1
        motion_end = self.outbox.pop()
        self.outbox += commands + [motion_end]


def deliver(session, kind, payload, dt=0.01):
    if kind == "status":
        session.on_status(payload)
    elif kind == "cmd":
        session.on_cmd_vel(*payload, dt)
    else:
        session.on_action(payload)


def pump(session, bus, nav, order=lambda msgs: msgs, hook=None, limit=20000):
    """Move messages both ways until the session is done (or nothing moves)."""
    for _ in range(limit):
        if session.phase == Phase.DONE:
            return
        moved = False
        while bus.outbox:
            nav.deliver(*bus.outbox.pop(0))
            moved = True
        msgs, nav.outbox = order(nav.outbox), []
        for kind, payload in msgs:
            moved = True
            if hook is not None and hook(session, nav, kind, payload):
                continue
            deliver(session, kind, payload)
        if not moved:
            return
    raise AssertionError("pump did not converge")


@pytest.fixture
def setup(split, tmp_path):
    plans = []

    def make(motion_source="action", **kw):
        cfg = eval_cfg(split, tmp_path / "ros", **kw)
        plan = plan_run(cfg)
        sim = make_sim(cfg)
        bus, clock = Bus(), Clock()
        session = SimSession(plan, sim, bus, ack_timeout=5.0, step_timeout=30.0, max_attempts=3,
                             clock=clock, motion_source=motion_source)
        plans.append((plan, sim))
        return session, bus, FakeNavigator(sim), clock

    yield make
    for plan, sim in plans:
        plan.close()
        sim.close()


def check_same(bus, reference, tmp_path):
    records = read_records(tmp_path / "ros" / "results" / "shard-000-of-001.jsonl")
    assert [r["episode_id"] for r in records] == sorted(reference, key=lambda e: int(e))
    for record in records:
        assert record["status"] == "ok", record
        assert stable(record) == stable(reference[record["episode_id"]])
        assert record["parse_failures"] is None  # not observable over ROS
        assert record["timings"]["stages_s"]["expert"] == pytest.approx(
            1e-3 * len(record["actions"]))
    assert [r["episode_id"] for r in bus.results] == [r["episode_id"] for r in records]
    assert bus.summaries and bus.summaries[-1]["complete"]


# ---------------------------------------------------------------- the handshake
def test_same_records_as_the_in_process_runner(setup, reference, tmp_path):
    session, bus, nav, _ = setup()
    assert session.start()[0] and session.phase == Phase.INSTRUCTING
    assert session.start() == (False, "already instructing")
    pump(session, bus, nav)
    assert session.phase == Phase.DONE
    check_same(bus, reference, tmp_path)
    assert bus.instructions == 3  # one per episode: no retries
    assert bus.progress[-1]["state"] == "done" and bus.progress[-1]["ok"] == 3
    # one observation per action: the first after the acknowledgement, then one per motion
    assert bus.observations == sum(len(r["actions"]) for r in reference.values())


@pytest.mark.parametrize("order", ["status_first", "motion_end_first", "reversed"])
def test_delivery_order_does_not_matter(setup, reference, tmp_path, order):
    def reorder(msgs):
        if order == "status_first":  # the echo before the action message
            return sorted(msgs, key=lambda m: m[0] != "status")
        if order == "motion_end_first":  # echo + motion end before the action
            return [m for m in msgs if m[0] == "status"] + [m for m in msgs if m[0] == "action"]
        return list(reversed(msgs))

    session, bus, nav, _ = setup()
    session.start()
    pump(session, bus, nav, order=reorder)
    check_same(bus, reference, tmp_path)


def test_an_observation_waits_for_the_end_of_the_motion(setup):
    session, bus, nav, _ = setup()
    session.start()
    nav.deliver(*bus.outbox.pop(0))  # instruction -> navigator's episode 1
    deliver(session, *nav.outbox.pop(0))  # its status: acknowledged -> first observation
    kind, stamp = bus.outbox.pop(0)
    assert kind == "observation" and session.phase == Phase.WAIT_ACTION
    assert session.expert()["stamp_ns"] == stamp  # what the expert:ros policy is told
    nav.policy = lambda: Action.MOVE_FORWARD
    nav.on_observation(stamp)
    action, echo, motion_end = nav.outbox
    deliver(session, *action)
    deliver(session, *echo)
    assert session.phase == Phase.WAIT_MOTION and not bus.outbox  # executed, not yet observed
    assert session.runner.actions == [1] and session.expert() is None
    deliver(session, *motion_end)
    assert session.phase == Phase.WAIT_ACTION and bus.outbox[0][0] == "observation"
    assert bus.outbox[0][1] > stamp  # a new, later stamp


def test_continuous_navigator_gets_the_next_frame_while_it_moves(setup, reference, tmp_path):
    session, bus, _, _ = setup()
    nav = ContinuousNavigator(session.sim)
    session.start()
    nav.deliver(*bus.outbox.pop(0))
    deliver(session, *nav.outbox.pop(0))
    _, stamp = bus.outbox.pop(0)
    nav.on_observation(stamp)
    first = nav.outbox[0][1]
    assert first != "STOP"
    for message in nav.outbox:
        deliver(session, *message)
    nav.outbox.clear()
    # executed, and the next observation is out although the navigator still drives
    assert session.runner.actions == [Action[first].value]
    assert bus.outbox[0][0] == "observation" and session.phase == Phase.WAIT_ACTION
    pump(session, bus, nav)
    check_same(bus, reference, tmp_path)


@pytest.mark.parametrize("order", ["as_sent", "status_first"])
def test_cmd_vel_mode_executes_what_the_velocities_integrate_to(setup, reference, tmp_path,
                                                                 order):
    """The sim_eval profile's fast limits (5 m/s, 10 rad/s, no ramps) at 100 Hz."""
    limits = MotionLimits(max_linear_speed=5.0, max_angular_speed=10.0,
                          linear_acceleration=0.0, angular_acceleration=0.0)
    session, bus, _, _ = setup(motion_source="cmd_vel")
    nav = VelocityNavigator(session.sim, limits, 0.01)
    session.start()

    def reorder(msgs):  # statuses overtaking the velocity commands on another topic
        return sorted(msgs, key=lambda m: m[0] != "status") if order == "status_first" else msgs

    pump(session, bus, nav, order=reorder)
    check_same(bus, reference, tmp_path)


def test_cmd_vel_mode_rejects_a_wrong_motion(setup, tmp_path):
    # profiles at 50 Hz read as 100 Hz commands cover half a step: the step fails, loudly
    limits = MotionLimits(max_linear_speed=0.25, max_angular_speed=0.5)
    session, bus, _, _ = setup(motion_source="cmd_vel", limit=1)
    nav = VelocityNavigator(session.sim, limits, 0.02)
    session.start()
    pump(session, bus, nav)
    (record,) = bus.results
    assert record["status"] == "error" and "cmd_vel integrates to" in record["error"]


# ---------------------------------------------------------------- recovery
def test_navigator_restart_restarts_the_episode(setup, reference, tmp_path):
    session, bus, nav, _ = setup()
    session.start()
    state = {"done": False}

    def restart(session_, nav_, kind, payload):
        # at step 5 of the second episode the navigator dies; a new one starts and receives
        # the latched instruction; a record of the dead one arrives late
        if not state["done"] and session.index == 1 and nav_.step == 5 and kind == "status":
            state["done"] = True
            stale = payload
            new = FakeNavigator(nav_.sim, name="nav-2")
            nav_.__dict__.update(new.__dict__)
            nav_.on_instruction(session.runner.episode.instruction)  # latched
            deliver(session, *nav_.outbox.pop(0))
            assert session.attempt.number == 2 and session.phase == Phase.INSTRUCTING
            session.on_status(dataclasses.replace(stale, step=6))  # ignored: replaced session
            return True
        return False

    pump(session, bus, nav, hook=restart)
    assert state["done"]
    check_same(bus, reference, tmp_path)
    assert bus.instructions == 4


@pytest.mark.parametrize("fault", ["discarded", "policy_error", "wrong_stamp", "mismatch",
                                   "foreign_episode", "two_actions", "stale"])
def test_broken_steps_are_retried_from_the_start(setup, reference, tmp_path, fault):
    session, bus, nav, _ = setup()
    session.start()
    state = {"done": False}

    def inject(session_, nav_, kind, payload):
        if state["done"] or session.index != 0 or nav_.step != 3 or kind != "action":
            return False
        state["done"] = True
        if fault == "discarded":
            nav_.discarded += 1
            session.on_status(nav_.report(stop_reason="stale_image", step=2))
        elif fault == "policy_error":
            session.on_status(nav_.report(stop_reason="policy_error", step=2, detail="boom"))
        elif fault == "wrong_stamp":
            session.on_action(payload)
            session.on_status(nav_.report(frame_stamp=1.0))
        elif fault == "mismatch":
            session.on_action("TURN_LEFT" if payload != "TURN_LEFT" else "TURN_RIGHT")
            session.on_status(nav_.report(frame_stamp=session.attempt.stamp_ns * 1e-9))
        elif fault == "foreign_episode":  # someone else instructed the navigator
            nav_.on_instruction("go somewhere else")
            deliver(session, *nav_.outbox.pop())
        elif fault == "two_actions":
            session.on_action(payload)
            session.on_action(payload)
        elif fault == "stale":
            session.on_status(nav_.report(stop_reason="stale_image", step=2, detail="old"))
        assert session.phase == Phase.INSTRUCTING and session.attempt.number == 2, fault
        assert session.runner.num_steps == 0  # the simulator is back at the start
        nav_.outbox.clear()  # the rest of the broken step never arrives
        return True

    pump(session, bus, nav, hook=inject)
    assert state["done"]
    check_same(bus, reference, tmp_path)


def test_an_episode_that_keeps_failing_is_recorded_as_an_error(setup, tmp_path):
    session, bus, nav, clock = setup()
    session.start()

    def fail_first_episode(session_, nav_, kind, payload):
        if session.index == 0 and kind == "status" and payload.step == 2:
            session.on_status(dataclasses.replace(payload, stop_reason="policy_error",
                                                  detail="CUDA out of memory", action=""))
            nav_.outbox.clear()
            return True
        return False

    pump(session, bus, nav, hook=fail_first_episode)
    records = read_records(tmp_path / "ros" / "results" / "shard-000-of-001.jsonl")
    first = records[0]
    assert first["status"] == "error" and "CUDA out of memory" in first["error"]
    assert "after 3 attempts" in first["error"]
    assert [r["status"] for r in records[1:]] == ["ok", "ok"]
    assert bus.summaries[-1]["summary"]["errors"] == 1


def test_simulator_failures_are_recorded_and_the_run_goes_on(setup, reference, tmp_path):
    session, bus, nav, _ = setup()
    sim = session.sim
    reset, step = sim.reset, sim.step

    def bad_reset(episode):
        if episode.episode_id == "1":
            raise RuntimeError("scene file is corrupt")
        return reset(episode)

    def bad_step(action):
        if session.runner.episode.episode_id == "2" and session.runner.num_steps == 4:
            raise ValueError("navmesh query failed")
        return step(action)

    sim.reset, sim.step = bad_reset, bad_step
    session.start()
    pump(session, bus, nav)
    first, second, third = read_records(tmp_path / "ros" / "results" / "shard-000-of-001.jsonl")
    assert first["status"] == "error" and first["error"] == "RuntimeError: scene file is corrupt"
    assert second["status"] == "error" and "navmesh query failed" in second["traceback"]
    assert stable(third) == stable(reference["3"])
    assert bus.summaries[-1]["summary"]["errors"] == 2


def test_timeouts(setup):
    session, bus, nav, clock = setup()
    session.start()
    assert bus.instructions == 1
    clock.now = 4.9
    session.tick()
    assert bus.instructions == 1
    clock.now = 5.1  # no acknowledgement within ack_timeout: instruct again, same attempt
    session.tick()
    assert bus.instructions == 2 and session.attempt.number == 1
    bus.outbox.clear()
    nav.on_instruction(session.runner.episode.instruction)
    deliver(session, *nav.outbox.pop(0))
    assert session.phase == Phase.WAIT_ACTION
    clock.now += 30.5  # no action within step_timeout: the episode starts again
    session.tick()
    assert session.phase == Phase.INSTRUCTING and session.attempt.number == 2


def test_navigator_ending_the_episode_itself(setup):
    session, bus, nav, _ = setup()
    session.start()

    def own_limit(session_, nav_, kind, payload):
        # the navigator's max_steps (2) is below the bridge's: after its 2nd motion it ends
        if kind == "status" and nav_.step == 2 and not payload.driving and payload.action:
            session.on_status(dataclasses.replace(payload, stop_reason="max_steps"))
            return True
        return False

    pump(session, bus, nav, hook=own_limit)
    for record in bus.results:
        assert record["end_reason"] == "max_steps" and len(record["actions"]) == 2


def test_skip_reset_and_resume(setup, split, tmp_path, reference):
    session, bus, nav, _ = setup()
    assert session.skip()[0] is False and session.expert() is None
    session.start()
    nav.deliver(*bus.outbox.pop(0))
    deliver(session, *nav.outbox.pop(0))
    ok, message = session.reset_episode()
    assert ok and "restarted" in message and session.attempt.number == 2
    ok, message = session.skip()
    assert ok and "skipped" in message
    assert bus.results[0]["status"] == "skipped" and session.index == 1
    bus.outbox.clear()
    nav.outbox.clear()
    session.plan.close()  # the bridge dies here, mid-episode 2
    # a new bridge on the same run directory runs episode 2 and 3 only (skipped counts as done)
    session2, bus2, nav2, _ = setup()
    assert [ep.episode_id for ep in session2.plan.todo()] == ["2", "3"]
    session2.start()
    pump(session2, bus2, nav2)
    records = read_records(tmp_path / "ros" / "results" / "shard-000-of-001.jsonl")
    assert [r["status"] for r in records] == ["skipped", "ok", "ok"]
    for r in records[1:]:
        assert stable(r) == stable(reference[r["episode_id"]])
    # retry_errors runs the skipped one again
    session2.plan.close()
    session3, bus3, nav3, _ = setup(retry_errors=True)
    assert [ep.episode_id for ep in session3.plan.todo()] == ["1"]


# ---------------------------------------------------------------- helpers
def test_camera_model_and_frames():
    fx, fy, cx, cy = pinhole_intrinsics(640, 480, 90.0)
    assert fx == pytest.approx(320.0) and fy == fx and (cx, cy) == (319.5, 239.5)
    with pytest.raises(ValueError, match="hfov"):
        pinhole_intrinsics(640, 480, 180.0)
    # habitat looks along -z at yaw 0 = ROS +x; habitat +x (right) = ROS -y; y up = z up
    (x, y, z), yaw = habitat_to_ros_pose([1.0, 0.5, -2.0], 0.3)
    assert (x, y, z, yaw) == (2.0, -1.0, 0.5, 0.3)
    q = yaw_to_ros_quaternion(math.pi / 2)
    assert np.allclose(q, [0, 0, math.sqrt(0.5), math.sqrt(0.5)])
    assert expert_reply(None)[0] is False
    assert expert_reply({"action": "STOP"}) == (True, '{"action": "STOP"}')
