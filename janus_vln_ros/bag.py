"""Record a navigator run to a ROS 2 bag, and replay a bag through a policy offline.

``janus-vln record OUT [--namespace NS] [--topics ...] [--duration S] [--storage mcap]``
    Subscribes (serialized, ``raw=True``) to the navigator's inputs and outputs as they appear
    on the graph and writes them with the ``rosbags`` library (MCAP by default; rosbag2 and
    ``ros2 bag`` are not installable here). Each subscription copies its publishers' QoS
    (reliable only if all are, transient-local only if all are, as rosbag2 does), and the
    offered QoS is stored so that a latched instruction stays latched on playback. Stops on
    SIGINT or after ``--duration``.

``janus-vln replay BAG --model SPEC [--mode steps|frames] [--output steps.jsonl]``
    Reads the bag and runs the policy on its camera frames, with no ROS graph, to debug a
    robot run at a desk. ``steps`` (the default when the bag has the navigator's status topic)
    feeds exactly the frames the robot used, episode by episode with the recorded instructions,
    and compares each action with the recorded one. ``frames`` feeds every ``--stride``-th frame
    with the instruction in force at that time. Frames go through the same conversion as in
    the node (:mod:`janus_vln_ros.frames`). One JSON line per step goes to ``--output``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import signal
import threading
import time
from pathlib import Path

from janus_core.actions import Action
from janus_core.console import ArgumentParser, add_verbose, fail, setup_logging
from janus_core.interface import Observation
from janus_vln_ros.policy_factory import PolicySpecError, check_spec, make_policy
from janus_vln_ros.status import NavigatorStatus

log = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")

# the navigator's topics relative to its namespace ({node} is the node name)
DEFAULT_TOPICS = (
    "camera/image_raw",
    "camera/image_raw/compressed",
    "camera/camera_info",
    "instruction",
    "odom",
    "estop",
    "cmd_vel",
    "{node}/action",
    "{node}/status",
    "/diagnostics",
)


class BagError(RuntimeError):
    """A bag cannot be recorded or replayed; the text says which file or topic and why."""


def default_topics(namespace: str = "", node: str = "navigator") -> list[str]:
    """The navigator's input and output topics as absolute names under ``namespace``."""
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    topics = []
    for topic in DEFAULT_TOPICS:
        topic = topic.format(node=node)
        topics.append(topic if topic.startswith("/") else f"{prefix}/{topic}")
    return topics


def message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy message class."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as err:
        raise BagError(f"message type {msgtype!r} is not importable: {err}") from None


# ------------------------------------------------------------------------------------ record
class BagRecorder:
    """Subscribes to ``topics`` once they have publishers and writes every message to ``writer``.

    Everything runs on the node's (single-threaded) executor, so the writer is never used from
    two threads. Call :meth:`discover` periodically (a timer does it after :meth:`start`).
    """

    def __init__(self, node, writer, topics: list[str], typestore):
        self.node = node
        self.writer = writer
        self.topics = list(topics)
        self.typestore = typestore
        self.counts: dict[str, int] = {}
        self._subscriptions = {}
        self._timer = None

    def start(self, period: float = 0.2) -> None:
        """Discover now and every ``period`` seconds."""
        self.discover()
        self._timer = self.node.create_timer(period, self.discover)

    def discover(self) -> None:
        """Subscribe to each wanted topic that now has a publisher (its QoS decides ours)."""
        available = dict(self.node.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self._subscriptions or topic not in available:
                continue
            types = available[topic]
            if len(types) != 1:
                log.warning("topic %s has several types %s; not recorded", topic, types)
                self._subscriptions[topic] = None
                continue
            if not self.node.get_publishers_info_by_topic(topic):
                continue  # only subscribers so far: wait for a publisher to copy its QoS
            msgtype = types[0]
            if msgtype not in self.typestore.fielddefs:
                log.warning("topic %s: type %s unknown to rosbags; not recorded", topic, msgtype)
                self._subscriptions[topic] = None
                continue
            self._subscribe(topic, msgtype)

    def _subscribe(self, topic: str, msgtype: str) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        infos = self.node.get_publishers_info_by_topic(topic)
        reliable = bool(infos) and all(
            i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos
        )
        latched = bool(infos) and all(
            i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos
        )
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=100,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        connection = self.writer.add_connection(
            topic, msgtype, typestore=self.typestore,
            offered_qos_profiles=[_bag_qos(reliable, latched)],
        )
        self.counts[topic] = 0

        def write(raw: bytes) -> None:
            self.writer.write(connection, time.time_ns(), raw)
            self.counts[topic] += 1

        self._subscriptions[topic] = self.node.create_subscription(
            message_class(msgtype), topic, write, qos, raw=True
        )
        log.info("recording %s (%s, %s, %s)", topic, msgtype,
                 "reliable" if reliable else "best effort",
                 "transient local" if latched else "volatile")


def _bag_qos(reliable: bool, latched: bool):
    """The offered QoS, in rosbags' representation, for a bag's metadata."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return Qos(
        history=QosHistory.KEEP_LAST, depth=1 if latched else 10,
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
        deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False,
    )


def record_parser() -> argparse.ArgumentParser:
    """Arguments of ``janus-vln record``."""
    parser = ArgumentParser(
        prog="janus-vln record", description="Record the navigator's topics to a ROS 2 bag."
    )
    parser.add_argument("output", type=Path, help="bag directory to create (must not exist)")
    parser.add_argument("--namespace", default="", help="the navigator's namespace")
    parser.add_argument("--node", default="navigator", help="the navigator's node name")
    parser.add_argument("--topics", nargs="+", help="record exactly these topics instead")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0: until SIGINT")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--zstd", action="store_true", help="compress (MCAP chunks / sqlite3 file)")
    return add_verbose(parser)


def record_main(argv: list[str] | None = None) -> int:
    """``janus-vln record``: record until SIGINT/SIGTERM or ``--duration``; returns 0 on success."""
    args = record_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.output.exists():
        return fail("record", f"{args.output} already exists; choose a new bag directory")
    if args.duration < 0:
        return fail("record", f"--duration must be >= 0, got {args.duration}")
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    topics = args.topics or default_topics(args.namespace, args.node)
    storage = StoragePlugin.MCAP if args.storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(args.output, version=9, storage_plugin=storage)
    if args.zstd:
        mode = CompressionMode.STORAGE if args.storage == "mcap" else CompressionMode.FILE
        writer.set_compression(mode, CompressionFormat.ZSTD)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    context = Context()
    rclpy.init(context=context, args=[], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("janus_bag_recorder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    writer.open()
    recorder = BagRecorder(node, writer, topics, get_typestore(Stores.ROS2_KILTED))

    def spin():
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    thread = threading.Thread(target=spin, name="recorder-executor")
    try:
        recorder.start()
        thread.start()
        log.info("record: writing %s (%s); topics: %s", args.output, args.storage, topics)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.wait(0.1):
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        executor.shutdown()
        if thread.is_alive():
            thread.join()
        writer.close()
        node.destroy_node()
        context.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    missing = [t for t in topics if t not in recorder.counts]
    log.info("record: done; messages per topic: %s; never seen: %s", recorder.counts, missing)
    return 0


# ------------------------------------------------------------------------------------ replay
@dataclasses.dataclass
class ReplayStep:
    """One replayed step (one JSON line of ``--output``)."""

    index: int
    episode: int
    step: int
    frame_stamp: float
    bag_time_ns: int
    instruction: str
    replayed_action: str
    recorded_action: str | None
    match: bool | None
    policy_ms: float
    matched_by: str


@dataclasses.dataclass
class _BagContents:
    images: list[tuple[int, float, bytes, str]]  # bag time, header stamp, raw, msgtype
    statuses: list[tuple[int, NavigatorStatus]]
    instructions: list[tuple[int, str]]
    image_topic: str


def read_bag(path: Path, image_topic: str | None = None) -> _BagContents:
    """Camera frames, navigator step records and instructions from the bag at ``path``."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from std_msgs.msg import String

    if not Path(path).exists():
        raise BagError(f"bag {path} does not exist")
    with Reader(path) as reader:
        connections = list(reader.connections)
        image_conns = [c for c in connections if c.msgtype in IMAGE_TYPES]
        if image_topic is not None:
            image_conns = [c for c in image_conns if c.topic == image_topic]
        if not image_conns:
            found = sorted({(c.topic, c.msgtype) for c in connections})
            raise BagError(
                f"bag {path}: no camera topic ({image_topic or 'any Image/CompressedImage'}); "
                f"topics in the bag: {found}"
            )
        if len({c.topic for c in image_conns}) > 1:
            raise BagError(
                f"bag {path}: several camera topics {sorted({c.topic for c in image_conns})}; "
                "pick one with --image-topic"
            )
        status_conns = [c for c in connections if c.msgtype == "std_msgs/msg/String"
                        and c.topic.endswith("/status")]
        instruction_conns = [c for c in connections if c.msgtype == "std_msgs/msg/String"
                             and c.topic.endswith("instruction")]
        image_ids = {c.id for c in image_conns}
        status_ids = {c.id for c in status_conns}
        instruction_ids = {c.id for c in instruction_conns}
        contents = _BagContents([], [], [], image_conns[0].topic)
        for connection, timestamp, raw in reader.messages():
            if connection.id in image_ids:
                msg = deserialize_message(raw, message_class(connection.msgtype))
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                contents.images.append((timestamp, stamp, raw, connection.msgtype))
            elif connection.id in status_ids:
                text = deserialize_message(raw, String).data
                try:
                    contents.statuses.append((timestamp, NavigatorStatus.from_json(text)))
                except (ValueError, TypeError) as err:
                    log.warning("replay: skipping a status message that is not a record: %s", err)
            elif connection.id in instruction_ids:
                contents.instructions.append((timestamp, deserialize_message(raw, String).data))
    return contents


def step_records(statuses: list[tuple[int, NavigatorStatus]]) -> list[tuple[int, NavigatorStatus]]:
    """The first status of each (episode, step) with an action: the robot's steps, in order."""
    seen, steps = set(), []
    for timestamp, status in statuses:
        key = (status.episode, status.step)
        if status.step > 0 and status.action and key not in seen:
            seen.add(key)
            steps.append((timestamp, status))
    return steps


def _rgb(raw: bytes, msgtype: str):
    from rclpy.serialization import deserialize_message

    from janus_vln_ros.frames import rgb_from_message

    return rgb_from_message(deserialize_message(raw, message_class(msgtype)))


def replay(path: Path, model: str, mode: str = "auto", stride: int = 1,
           instruction: str | None = None, image_topic: str | None = None,
           max_steps: int = 0) -> list[ReplayStep]:
    """Run ``model`` on the bag's frames (see the module docstring) and return the steps."""
    contents = read_bag(path, image_topic)
    robot_steps = step_records(contents.statuses)
    if mode == "auto":
        mode = "steps" if robot_steps else "frames"
    if mode == "steps" and not robot_steps:
        raise BagError(f"bag {path}: no navigator step records (…/status); use --mode frames")
    if stride < 1:
        raise BagError(f"--stride must be >= 1, got {stride}")
    try:
        policy = make_policy(model)
    except ValueError as err:  # PolicySpecError, CheckpointError, ConfigError
        raise BagError(f"--model {model}: {err}") from None
    results: list[ReplayStep] = []
    try:
        if mode == "steps":
            by_stamp = {stamp: (t, raw, kind) for t, stamp, raw, kind in contents.images if stamp}
            episode = None
            for timestamp, status in robot_steps:
                if status.episode != episode:
                    episode = status.episode
                    policy.reset(instruction if instruction is not None else status.instruction)
                if status.frame_stamp and status.frame_stamp in by_stamp:
                    bag_time, raw, kind = by_stamp[status.frame_stamp]
                    matched_by = "stamp"
                else:  # camera without stamps: the last frame recorded before the step
                    earlier = [im for im in contents.images if im[0] <= timestamp]
                    if not earlier:
                        log.warning("replay: no frame before step %d; skipped", status.step)
                        continue
                    bag_time, _, raw, kind = earlier[-1]
                    matched_by = "time"
                results.append(_run_step(policy, len(results), status.episode, status.step,
                                         status.frame_stamp, bag_time, raw, kind,
                                         instruction or status.instruction, status.action,
                                         matched_by))
                if max_steps and len(results) >= max_steps:
                    break
        else:
            instructions = list(contents.instructions)
            current, episode, step = None, 0, 0
            for index, (bag_time, stamp, raw, kind) in enumerate(contents.images):
                while instructions and instructions[0][0] <= bag_time:
                    text = instructions.pop(0)[1].strip()
                    if text and instruction is None:
                        current, episode, step = text, episode + 1, 0
                        policy.reset(current)
                if instruction is not None and current is None:
                    current, episode = instruction, 1
                    policy.reset(current)
                if current is None or index % stride:
                    continue
                step += 1
                results.append(_run_step(policy, len(results), episode, step, stamp, bag_time,
                                         raw, kind, current, None, "frame"))
                if max_steps and len(results) >= max_steps:
                    break
            if current is None:
                raise BagError(
                    f"bag {path}: no instruction message before the frames; pass --instruction"
                )
    finally:
        policy.close()
    return results


def _run_step(policy, index, episode, step, stamp, bag_time, raw, kind, instruction,
              recorded, matched_by) -> ReplayStep:
    rgb = _rgb(raw, kind)
    start = time.perf_counter()
    result = policy.act(Observation(rgb=rgb, stamp=stamp))
    policy_ms = (time.perf_counter() - start) * 1e3
    replayed = Action(result.action).name
    return ReplayStep(
        index=index, episode=episode, step=step, frame_stamp=stamp, bag_time_ns=bag_time,
        instruction=instruction, replayed_action=replayed, recorded_action=recorded,
        match=None if recorded is None else recorded == replayed, policy_ms=policy_ms,
        matched_by=matched_by,
    )


def replay_parser() -> argparse.ArgumentParser:
    """Arguments of ``janus-vln replay``."""
    parser = ArgumentParser(
        prog="janus-vln replay", description="Replay a recorded bag through a policy offline."
    )
    parser.add_argument("bag", type=Path, help="bag directory (MCAP or sqlite3)")
    parser.add_argument("--model", required=True, help="policy spec, as the navigator's model")
    parser.add_argument("--mode", choices=("auto", "steps", "frames"), default="auto")
    parser.add_argument("--stride", type=int, default=1, help="frames mode: every n-th frame")
    parser.add_argument("--instruction", help="override the recorded instruction(s)")
    parser.add_argument("--image-topic", help="camera topic when the bag has several")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after n steps; 0: all")
    parser.add_argument("--output", type=Path, help="write one JSON line per step here")
    return add_verbose(parser)


def replay_main(argv: list[str] | None = None) -> int:
    """``janus-vln replay``: returns 0, or 2 with a logged reason when the bag cannot be used."""
    args = replay_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        check_spec(args.model)
        if args.output is not None and args.output.is_dir():
            raise BagError(f"--output {args.output} is a directory; give a file name (.jsonl)")
        steps = replay(args.bag, args.model, args.mode, args.stride, args.instruction,
                       args.image_topic, args.max_steps)
    except (BagError, PolicySpecError) as err:
        return fail("replay", err)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("w") as out:
            for step in steps:
                out.write(json.dumps(dataclasses.asdict(step)) + "\n")
    compared = [s for s in steps if s.match is not None]
    agree = sum(s.match for s in compared)
    policy_ms = sorted(s.policy_ms for s in steps)
    median = policy_ms[len(policy_ms) // 2] if policy_ms else 0.0
    if compared:
        log.info("replay: %d steps; %d/%d actions agree with the recording (%.1f%%); "
                 "policy median %.2f ms", len(steps), agree, len(compared),
                 100.0 * agree / len(compared), median)
    else:
        log.info("replay: %d steps (no recorded actions to compare); policy median %.2f ms",
                 len(steps), median)
    return 0
