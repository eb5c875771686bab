"""The sim_bridge node over real ROS 2: topics, services, records, and the expert through ROS.

* The bridge and the navigator run as processes; the navigator drives with ``expert:ros`` (the
  simulator's expert asked over the bridge's service, behind the navigator's Policy interface).
  Every episode succeeds and every record equals the in-process runner's on the same episodes;
  the images, camera info, odometry, instructions and results seen on the topics match.
* The bridge alone, with this test playing the navigator: ``~/start``, ``~/expert_action``,
  ``~/reset``, ``~/skip``, and a clear exit code for bad parameters.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
from nav_msgs.msg import Odometry
from ros_harness import REPO, NodeProcess, RosHarness, qos, ros_args, wait_until
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from janus_vln_ros.sim_session import pinhole_intrinsics
from janus_vln_ros.status import NavigatorStatus
from sim_bridge.evaluate import EvalConfig, evaluate
from sim_bridge.generate import GenerateConfig, generate_dataset
from sim_bridge.results import read_records

VOLATILE = ("timings", "finished_at", "shard", "parse_failures", "policy")
W, H = 160, 120


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    cfg = GenerateConfig(splits={"val_unseen": 3}, seed=5, episodes_per_scene=3,
                         min_geodesic=3.0, max_geodesic=5.0, mean_geodesic=4.0)
    return generate_dataset(out, cfg)["val_unseen"]


@pytest.fixture(scope="module")
def harness():
    h = RosHarness("sim_bridge_test")
    yield h
    h.close()


def bridge_command(params: dict, namespace: str) -> list[str]:
    command = [sys.executable, "-m", "janus_vln_ros.sim_bridge_node"]
    return command + ros_args(params, name="sim_bridge", namespace=namespace,
                              params_file=REPO / "config" / "sim_bridge.yaml") + [
        "--params-file", str(REPO / "config" / "sim_eval.yaml")]


def navigator_command(params: dict, namespace: str) -> list[str]:
    command = [sys.executable, "-m", "janus_vln_ros.navigator_node"]
    return command + ros_args(params, name="navigator", namespace=namespace,
                              params_file=REPO / "config" / "navigator.yaml") + [
        "--params-file", str(REPO / "config" / "sim_eval.yaml")]


def stable(record):
    return {k: v for k, v in record.items() if k not in VOLATILE}


def test_expert_over_ros_matches_the_in_process_runner(split, harness, tmp_path):
    ns = "/exp"
    images = harness.record(Image, f"{ns}/camera/image_raw", qos(1000))
    infos = harness.record(CameraInfo, f"{ns}/camera/camera_info", qos(1000))
    odom = harness.record(Odometry, f"{ns}/odom", qos(1000))
    depth = harness.record(Image, f"{ns}/camera/depth/image_raw", qos(1000))
    instructions = harness.record(String, f"{ns}/instruction", qos(10, latched=True))
    results = harness.record(String, f"{ns}/sim_bridge/episode_result", qos(100))
    progress = harness.record(String, f"{ns}/sim_bridge/progress", qos(1, latched=True))
    out = tmp_path / "ros"
    bridge = NodeProcess(bridge_command({
        "split": str(split), "output_dir": str(out), "width": W, "height": H,
        "policy_label": "expert:ros", "exit_when_done": True,
        "sim_settings": "{furniture: shapes}"}, ns))
    navigator = NodeProcess(navigator_command({"model": "expert:ros", "autostart": True}, ns))
    try:
        assert bridge.wait(timeout=60) == 0, bridge.log() + navigator.log()
        assert navigator.sigint() == 0, navigator.log()
    finally:
        bridge.kill()
        navigator.kill()
    assert "split finished: 3 of 3 episodes" in bridge.log()
    records = read_records(out / "results" / "shard-000-of-001.jsonl")
    inproc = tmp_path / "inproc"
    evaluate(EvalConfig(policy="expert", split=str(split), output_dir=str(inproc),
                        sim={"render": False, "furniture": "shapes"}, progress=False))
    reference = read_records(inproc / "results" / "shard-000-of-001.jsonl")
    assert [stable(r) for r in records] == [stable(r) for r in reference]
    assert all(r["metrics"]["sr"] == 1.0 and r["policy"] == "expert:ros" for r in records)
    assert json.loads((out / "metrics.json").read_text())["complete"]

    # the topics a robot's navigator reads, one observation per step
    assert wait_until(lambda: len(results.messages) == 3, 5.0)
    assert [json.loads(m.data) for m in results.messages] == records
    steps = sum(len(r["actions"]) for r in records)
    assert wait_until(lambda: len(images.messages) == steps, 5.0), (len(images.messages), steps)
    assert len(infos.messages) == len(odom.messages) == len(depth.messages) == steps
    image = images.messages[0]
    assert (image.width, image.height, image.encoding) == (W, H, "rgb8")
    assert image.header.frame_id == "camera_color_optical_frame"
    assert depth.messages[0].encoding == "32FC1"
    fx, fy, cx, cy = pinhole_intrinsics(W, H, 79.0)
    info = infos.messages[0]
    assert (info.width, info.height) == (W, H)
    assert list(info.k) == pytest.approx([fx, 0, cx, 0, fy, cy, 0, 0, 1])
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in images.messages]
    assert stamps == [(m.header.stamp.sec, m.header.stamp.nanosec) for m in infos.messages]
    assert len(set(stamps)) == steps and stamps == sorted(stamps)
    # odometry = the recorded path in REP 103 axes (x = -z, y = -x, z = y; same yaw)
    poses = [(m.pose.pose.position, m.pose.pose.orientation) for m in odom.messages]
    path = [(p, y) for r in records for p, y in zip(r["positions"], r["yaws"])]
    assert len(poses) == len(path)
    for (position, q), ((hx, hy, hz), yaw) in zip(poses, path):
        assert (position.x, position.y, position.z) == pytest.approx((-hz, -hx, hy), abs=1e-4)
        assert 2 * math.atan2(q.z, q.w) == pytest.approx(yaw, abs=1e-4)
    sent = [m.data for m in instructions.messages]
    assert sent[-1] == records[-1]["instruction"]
    assert json.loads(progress.last().data)["state"] == "done"


def test_cmd_vel_mode_over_ros(split, tmp_path):
    """The bridge moves the agent by the navigator's integrated velocity commands."""
    ns = "/vel"
    out = tmp_path / "ros"
    bridge = NodeProcess(bridge_command({
        "split": str(split), "output_dir": str(out), "width": 32, "height": 24, "limit": 2,
        "policy_label": "expert:ros", "exit_when_done": True, "motion_source": "cmd_vel",
        "cmd_vel_stamped": True, "sim_settings": "{furniture: shapes}"}, ns))
    navigator = NodeProcess(navigator_command(
        {"model": "expert:ros", "autostart": True, "enable_stamped_cmd_vel": True}, ns))
    try:
        assert bridge.wait(timeout=60) == 0, bridge.log() + navigator.log()
        assert navigator.sigint() == 0, navigator.log()
    finally:
        bridge.kill()
        navigator.kill()
    assert "restarts from its start" not in bridge.log()
    inproc = tmp_path / "inproc"
    evaluate(EvalConfig(policy="expert", split=str(split), output_dir=str(inproc), limit=2,
                        sim={"render": False, "furniture": "shapes"}, progress=False))
    records = read_records(out / "results" / "shard-000-of-001.jsonl")
    reference = read_records(inproc / "results" / "shard-000-of-001.jsonl")
    assert [stable(r) for r in records] == [stable(r) for r in reference]


def test_services_and_handshake_with_a_scripted_navigator(split, harness, tmp_path):
    """This test is the navigator: it acknowledges, acts, and calls the bridge's services."""
    ns = "/svc"
    out = tmp_path / "run"
    images = harness.record(Image, f"{ns}/camera/image_raw", qos(10))
    instructions = harness.record(String, f"{ns}/instruction", qos(10, latched=True))
    results = harness.record(String, f"{ns}/sim_bridge/episode_result", qos(100))
    status = harness.publisher(String, f"{ns}/navigator/status", qos(50))
    action = harness.publisher(String, f"{ns}/navigator/action", qos(10))
    bridge = NodeProcess(bridge_command({
        "split": str(split), "output_dir": str(out), "width": 32, "height": 24,
        "autostart": False, "depth_topic": "", "limit": 2}, ns))
    nav = NavigatorStatus(state="active", stop_reason="none")

    def send_status(**kw):
        for key, value in kw.items():
            setattr(nav, key, value)
        status.publish(String(data=nav.to_json()))

    def call(name):
        return harness.call(Trigger, f"{ns}/sim_bridge/{name}", timeout=15.0)

    try:
        assert harness.wait_for_subscribers(status, timeout=15.0), bridge.log()
        assert harness.wait_for_subscribers(action, timeout=5.0)
        answer = call("expert_action")
        assert not answer.success and "no observation" in answer.message
        assert call("skip").success is False  # not started
        assert call("start").success
        assert call("start").success is False  # already running
        first = instructions.wait_for(timeout=10.0)
        assert first is not None and first.data
        assert images.messages == []  # no frame before the navigator started the episode
        send_status(episode=1, step=0, instruction=first.data.strip())
        frame = images.wait_for(timeout=10.0)
        assert frame is not None
        stamp = frame.header.stamp.sec + frame.header.stamp.nanosec * 1e-9
        expert = call("expert_action")
        assert expert.success, expert.message
        hint = json.loads(expert.message)
        assert hint["stamp"] == pytest.approx(stamp, abs=1e-6) and hint["step"] == 0
        # act: the action topic plus the status echo; a move waits for the motion's end
        action.publish(String(data=hint["action"]))
        send_status(step=1, action=hint["action"], driving=True, frame_stamp=stamp)
        assert not wait_until(lambda: len(images.messages) > 1, 0.5)
        send_status(driving=False)
        assert wait_until(lambda: len(images.messages) == 2, 10.0), bridge.log()
        # ~/reset: the episode starts again with a new instruction, then ~/skip records it
        assert call("reset").success
        assert wait_until(lambda: len(instructions.messages) == 2, 10.0)
        assert call("skip").success
        assert wait_until(lambda: len(results.messages) == 1, 10.0)
        skipped = json.loads(results.messages[0].data)
        assert skipped["status"] == "skipped" and skipped["error"].startswith("skipped")
        assert wait_until(lambda: len(instructions.messages) == 3, 10.0)  # episode 2 begins
        assert bridge.alive() and bridge.sigint() == 0, bridge.log()
    finally:
        bridge.kill()
    (record,) = read_records(out / "results" / "shard-000-of-001.jsonl")
    assert record["status"] == "skipped"


def test_bad_parameters_exit_with_code_2(harness, tmp_path):
    missing = NodeProcess(bridge_command({"output_dir": str(tmp_path)}, "/bad"))
    wrong = NodeProcess(bridge_command({"split": "x.json", "hfov_deg": 500.0}, "/bad2"))
    try:
        assert missing.wait(timeout=30) == 2
        assert "parameter split: required" in missing.log()
        assert wrong.wait(timeout=30) == 2
        assert "hfov_deg" in wrong.log()
    finally:
        missing.kill()
        wrong.kill()
