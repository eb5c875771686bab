"""Benchmark: what the navigator node adds between a camera frame and its velocity command.

A real navigator process (``constant:MOVE_FORWARD:<delay>``, a constant-time policy) is fed
640x480 frames at 30 Hz over DDS by this process. For every step the node reports, in its
status record, the time from the frame's header stamp (set just before ``publish``) to its
first velocity command; the overhead is that minus the policy's own time, so it covers DDS
transport, conversion, hand-over to the worker thread, motion planning and the publish. The
same overhead is also measured from outside: arrival of that first command here, minus the
frame stamp, minus the policy time (this adds the cmd_vel transport back to us).

Frames lost = frames published - frames the node's camera callback received. Frames that
arrive while the policy or a motion runs are superseded by design (the next step uses the
latest frame); they are not lost.

Target (issue 8): p95 overhead <= 5 ms, no frames lost.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="janus_bench_log_"))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.qos import (  # noqa: E402
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from benchmarks.common import markdown_table, write_result  # noqa: E402
from janus_vln_ros.conversions import numpy_to_compressed, numpy_to_image  # noqa: E402
from janus_vln_ros.status import NavigatorStatus  # noqa: E402

NS = "/bench"


def navigator_command(args) -> list[str]:
    prefix = REPO / "install" / "janus_vln_ros"
    installed = prefix / "lib" / "janus_vln_ros" / "navigator"
    sourced = str(prefix) in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    if installed.exists() and sourced:  # built and its setup.bash sourced
        exe = [str(installed)]
    else:
        exe = [sys.executable, "-m", "janus_vln_ros.navigator_node"]
    params = {
        "model": f"constant:MOVE_FORWARD:{args.policy_ms / 1e3!r}",
        "autostart": "true", "image_transport": args.transport, "image_qos": args.qos,
        "forward_distance": "0.01", "max_linear_speed": "1.0", "linear_acceleration": "0.0",
        "control_rate": "100.0", "max_steps": "0", "image_timeout": "1.0",
        "continuous_motion": "false",  # every step starts a motion from rest: its first command
    }
    cmd = exe + ["--ros-args", "-r", f"__ns:={NS}"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    return cmd


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    parser.add_argument("--policy-ms", type=float, default=20.0, help="constant policy time")
    parser.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    parser.add_argument("--qos", choices=("sensor_data", "reliable"), default="sensor_data")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    context = Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("navigator_benchmark", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    cmd_arrivals: list[tuple[float, float]] = []  # wall time, linear.x
    statuses: list[NavigatorStatus] = []
    lock = threading.Lock()

    def on_cmd(msg: Twist):
        with lock:
            cmd_arrivals.append((time.time(), msg.linear.x))

    def on_status(msg: String):
        with lock:
            statuses.append(NavigatorStatus.from_json(msg.data))

    node.create_subscription(Twist, f"{NS}/cmd_vel", on_cmd, reliable)
    node.create_subscription(String, f"{NS}/navigator/status", on_status, reliable)
    instruction = node.create_publisher(String, f"{NS}/instruction", latched)
    # a smooth frame with mild noise (as benchmarks/image_conversion.py): JPEG-realistic size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    rgb = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    rgb = np.clip(rgb.astype(int) + rng.integers(-4, 5, rgb.shape), 0, 255).astype(np.uint8)
    if args.transport == "compressed":
        msg = numpy_to_compressed(rgb, "jpeg")
        camera = node.create_publisher(type(msg), f"{NS}/camera/image_raw/compressed",
                                       qos_profile_sensor_data)
    else:
        msg = numpy_to_image(rgb, "rgb8")
        camera = node.create_publisher(type(msg), f"{NS}/camera/image_raw",
                                       qos_profile_sensor_data)
    spin = threading.Thread(target=lambda: _spin(executor), daemon=True)
    spin.start()

    log_file = tempfile.NamedTemporaryFile(prefix="navigator_bench_", suffix=".log", delete=False)
    proc = subprocess.Popen(navigator_command(args), stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=REPO)
    published = 0
    try:
        deadline = time.monotonic() + 30
        while camera.get_subscription_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        if camera.get_subscription_count() < 1:
            raise SystemExit(f"navigator never subscribed; log: {log_file.name}")
        instruction.publish(String(data="walk forward"))
        time.sleep(1.0)  # autostart + discovery
        period = 1.0 / args.rate
        start = time.monotonic()
        measure_from = time.time() + args.warmup
        total = args.warmup + args.seconds
        k = 0
        while True:
            target = start + k * period
            if target - start >= total:
                break
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg.header.stamp = node.get_clock().now().to_msg()
            camera.publish(msg)
            published += 1
            k += 1
        time.sleep(args.policy_ms / 1e3 + 1.5)  # last step + the stale-image status
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        executor.shutdown()
        spin.join(timeout=10)
        node.destroy_node()
        context.try_shutdown()

    with lock:
        records = list(statuses)
        arrivals = list(cmd_arrivals)
    steps, seen = [], set()
    for status in records:
        key = (status.episode, status.step)
        if status.step > 0 and key not in seen and "overhead" in status.latency_ms:
            seen.add(key)
            if status.frame_stamp >= measure_from:
                steps.append(status)
    overhead = [s.latency_ms["overhead"] for s in steps]
    stages = {name: [s.latency_ms.get(name, float("nan")) for s in steps]
              for name in ("transport", "convert", "wait", "policy", "command")}
    external = []
    for s in steps:
        first = next((t for t, v in arrivals if t >= s.frame_stamp and v > 0.0), None)
        if first is not None:
            external.append((first - s.frame_stamp) * 1e3 - s.latency_ms["policy"])
    received = max((s.frames_received for s in records), default=0)
    lost = published - received
    rows = [
        ["overhead (node: stamp -> first cmd - policy)", f"{percentile(overhead, 50):.2f}",
         f"{percentile(overhead, 95):.2f}", f"{max(overhead, default=float('nan')):.2f}"],
        ["overhead (external: cmd arrival - stamp - policy)", f"{percentile(external, 50):.2f}",
         f"{percentile(external, 95):.2f}", f"{max(external, default=float('nan')):.2f}"],
    ]
    rows += [[f"  stage: {name}", f"{percentile(v, 50):.2f}", f"{percentile(v, 95):.2f}",
              f"{np.nanmax(v) if v else float('nan'):.2f}"] for name, v in stages.items()]
    table = markdown_table(["latency (ms)", "p50", "p95", "max"], rows)
    summary = (
        f"- Camera: 640x480 {args.transport} ({args.qos} QoS) at {args.rate:g} Hz for "
        f"{args.seconds:g} s (+{args.warmup:g} s warm-up); policy: constant {args.policy_ms:g} ms\n"
        f"- Steps measured: {len(steps)}; frames published {published}, received by the node "
        f"{received}, lost {lost}\n"
        f"- Target: p95 overhead <= 5 ms and no frames lost: "
        f"{'met' if percentile(overhead, 95) <= 5.0 and lost == 0 else 'NOT met'}\n"
        f"- Navigator exit code after SIGINT: {code}"
    )
    print(table + "\n\n" + summary + f"\n- Navigator log: {log_file.name}")  # noqa: T201
    if not args.no_write:
        title = f"Navigator camera-to-command overhead, 640x480 {args.transport} @ {args.rate:g} Hz"
        write_result("navigator_overhead", title, table, summary)


def _spin(executor):
    try:
        executor.spin()
    except ExternalShutdownException:
        pass


if __name__ == "__main__":
    main()
