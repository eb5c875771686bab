"""Record a live navigator run to MCAP (``janus-vln record`` as a process) and replay it offline."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
from geometry_msgs.msg import Twist
from rclpy.serialization import serialize_message
from ros_harness import NodeProcess, RosHarness, qos, start_navigator, wait_until
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image
from std_msgs.msg import String

from janus_vln_ros.bag import (
    BagError,
    default_topics,
    read_bag,
    record_main,
    replay,
    replay_main,
    step_records,
)
from janus_vln_ros.conversions import numpy_to_compressed, numpy_to_image


def image(seed: int) -> Image:
    rng = np.random.default_rng(seed)
    return numpy_to_image(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), "rgb8")


@pytest.fixture(scope="module")
def recorded_bag(tmp_path_factory):
    """A real run: navigator + recorder processes, the harness as camera and operator."""
    bag = tmp_path_factory.mktemp("bags") / "run"
    harness = RosHarness("bag_test")
    cmd = harness.record(Twist, "/rec/cmd_vel")
    actions = harness.record(String, "/rec/navigator/action")
    camera = harness.publisher(Image, "/rec/camera/image_raw", qos(1))
    instruction = harness.publisher(String, "/rec/instruction", qos(1, latched=True))
    instruction.publish(String(data="go to the red chair"))
    recorder = NodeProcess([sys.executable, "-m", "janus_vln_ros.cli", "record", str(bag),
                            "--namespace", "rec"])
    nav = start_navigator(dict(model="constant:MOVE_FORWARD", autostart=True,
                               forward_distance=0.02, max_linear_speed=0.5,
                               linear_acceleration=0.0, control_rate=50.0, max_steps=0),
                          namespace="/rec")
    try:
        for topic in ("instruction", "navigator/status", "navigator/action", "cmd_vel"):
            assert recorder.wait_for_log(f"recording /rec/{topic}", 15.0), recorder.log()
        assert wait_until(lambda: len(harness.node.get_subscriptions_info_by_topic(
            "/rec/navigator/status")) >= 1, 5.0)
        time.sleep(0.5)  # let the recorder's readers match the navigator's writers
        seed = 0

        def enough():
            nonlocal seed
            seed += 1
            msg = image(seed)
            msg.header.stamp = harness.node.get_clock().now().to_msg()
            camera.publish(msg)
            return len(actions.messages) >= 6

        assert wait_until(enough, 20.0, period=0.05), nav.log()
        time.sleep(0.3)
        assert nav.sigint() == 0, nav.log()
        time.sleep(0.3)
        assert recorder.sigint() == 0, recorder.log()
    finally:
        nav.kill()
        recorder.kill()
        harness.close()
    return bag, len(actions.messages), cmd.messages


def test_record_writes_inputs_and_outputs(recorded_bag):
    bag, n_actions, cmds = recorded_bag
    with Reader(bag) as reader:
        topics = {c.topic: c for c in reader.connections}
        counts = {t: 0 for t in topics}
        for connection, _, _ in reader.messages():
            counts[connection.topic] += 1
    assert "storage_identifier: mcap" in (bag / "metadata.yaml").read_text()
    for topic in ("/rec/camera/image_raw", "/rec/instruction", "/rec/cmd_vel",
                  "/rec/navigator/action", "/rec/navigator/status", "/diagnostics"):
        assert counts.get(topic, 0) > 0, f"{topic} not recorded: {counts}"
    assert topics["/rec/camera/image_raw"].msgtype == "sensor_msgs/msg/Image"
    assert counts["/rec/navigator/action"] == n_actions
    qos_profiles = topics["/rec/instruction"].ext.offered_qos_profiles
    assert qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL  # stays latched


def test_replay_steps_reproduces_the_robot_run(recorded_bag, tmp_path):
    bag, n_actions, _ = recorded_bag
    contents = read_bag(bag)
    robot_steps = step_records(contents.statuses)
    assert len(robot_steps) == n_actions
    out = tmp_path / "steps.jsonl"
    assert replay_main([str(bag), "--model", "constant:MOVE_FORWARD", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == n_actions
    assert all(r["matched_by"] == "stamp" and r["match"] for r in rows)
    assert {r["instruction"] for r in rows} == {"go to the red chair"}
    assert [r["frame_stamp"] for r in rows] == [s.frame_stamp for _, s in robot_steps]
    # a different policy disagrees on every step
    steps = replay(bag, "constant:TURN_LEFT")
    assert steps and not any(s.match for s in steps)


def synthetic_bag(path, compressed=False, with_instruction=True):
    typestore = get_typestore(Stores.ROS2_KILTED)
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/cam/image", msgtype, typestore=typestore)
        ins = writer.add_connection("/instruction", "std_msgs/msg/String", typestore=typestore)
        t = 1_000_000_000
        if with_instruction:
            writer.write(ins, t, serialize_message(String(data="first")))
        for i in range(10):
            rgb = np.full((16, 16, 3), i * 20, np.uint8)
            msg = numpy_to_compressed(rgb) if compressed else numpy_to_image(rgb, "rgb8")
            msg.header.stamp.sec = 100 + i
            writer.write(cam, t + (i + 1) * 100_000_000, serialize_message(msg))
            if with_instruction and i == 5:
                second = serialize_message(String(data="second"))
                writer.write(ins, t + (i + 1) * 100_000_000 + 1, second)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_replay_frames_mode_on_synthetic_bag(tmp_path, compressed):
    bag = synthetic_bag(tmp_path / "syn", compressed)
    steps = replay(bag, "forward", mode="frames", stride=2)
    assert [s.frame_stamp for s in steps] == [100.0, 102.0, 104.0, 106.0, 108.0]
    assert [s.instruction for s in steps] == ["first"] * 3 + ["second"] * 2
    assert [s.episode for s in steps] == [1, 1, 1, 2, 2]
    assert [s.step for s in steps] == [1, 2, 3, 1, 2]
    assert all(s.replayed_action == "MOVE_FORWARD" and s.match is None for s in steps)


def test_replay_errors_are_clear(tmp_path, capsys):
    assert replay_main([str(tmp_path / "missing"), "--model", "forward"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bag = synthetic_bag(tmp_path / "noins", with_instruction=False)
    with pytest.raises(BagError, match="no instruction message before the frames"):
        replay(bag, "forward", mode="frames")
    assert len(replay(bag, "forward", mode="frames", instruction="go")) == 10
    with pytest.raises(BagError, match="no navigator step records"):
        replay(bag, "forward", mode="steps")
    with pytest.raises(BagError, match="no camera topic"):
        replay(bag, "forward", image_topic="/other")


def test_record_refuses_existing_output_and_default_topics(tmp_path):
    assert record_main([str(tmp_path)]) == 2
    topics = default_topics("robot1")
    assert "/robot1/camera/image_raw" in topics and "/robot1/navigator/status" in topics
    assert "/diagnostics" in topics and "/robot1/cmd_vel" in topics
    assert default_topics("")[0] == "/camera/image_raw"
