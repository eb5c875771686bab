"""Benchmark: the camera on one host, the navigator on another, over CompressedImage.

Two ROS processes: a camera process (``--role camera``) that renders the embedded simulator's
view along a shipped demo episode (the simulator's expert walks it) and publishes it as JPEG
``sensor_msgs/CompressedImage`` at 640x480 and 10 Hz, best effort depth 1 (sensor data QoS),
with the header stamp set just before ``publish``; and the navigator process
(``image_transport: compressed``, a constant 20 ms policy) that drives from those frames.
A monitor records the navigator's status records: the frames its camera callback received,
and per step ``latency_ms.transport`` (frame stamp to the navigator's callback; both processes
share this machine's clock).

Two ways to place them (``--mode``):

* ``localhost``: both on this host's loopback with the package's settings
  (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, Fast DDS shared memory); the monitor is this
  process. What the test runs.
* ``netns`` (root): two Linux network namespaces joined by a veth pair, each process in its
  own, ``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``, ``FASTDDS_BUILTIN_TRANSPORTS=UDPv4`` and no
  shared-memory profile: the traffic goes through a network interface, as between two hosts,
  and the bytes on the wire (RTPS, discovery included) are read from the veth counters.
  ``--netem "delay 2ms rate 50mbit"`` shapes the link (Wi-Fi-like; needs the kernel's
  sch_netem module, which the machine of the recorded results lacks).

Bandwidth is reported twice: the JPEG payload the camera sent (bytes/s), and in ``netns`` mode
what crossed the link in each direction.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_SPLIT = REPO / "models" / "janusvln-small" / "demo" / "val_unseen_demo.json.gz"
NS = "/offboard"
NAV_PARAMS = {
    "model": "constant:MOVE_FORWARD:0.02", "autostart": True, "image_transport": "compressed",
    "image_qos": "sensor_data", "image_timeout": 2.0, "max_steps": 0, "forward_distance": 0.05,
    "max_linear_speed": 0.5, "control_rate": 50.0,
}


# ---------------------------------------------------------------- the camera process
def _frames(width: int, height: int):
    """Endless simulator views along the first demo episode (the expert walks it, then again)."""
    from sim_bridge.backends import make_simulator
    from sim_bridge.episodes import find_gt_path, load_split
    from sim_bridge.simulator import SimConfig

    episode = load_split(DEMO_SPLIT, gt_path=find_gt_path(DEMO_SPLIT))[0]
    sim = make_simulator(SimConfig(width=width, height=height, hfov_deg=79.0,
                                   furniture="shapes"))
    try:
        while True:
            obs = sim.reset(episode)
            for _ in range(500):
                yield obs.rgb
                action = sim.expert_action()
                if int(action) == 0:
                    break
                obs = sim.step(action)
    finally:
        sim.close()


def run_camera(args) -> dict:
    """Publish ``args.seconds`` of frames at ``args.rate`` Hz; return what was sent."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    from janus_vln_ros.conversions import numpy_to_compressed

    rclpy.init(args=[])
    node = rclpy.create_node("offboard_camera")
    pub = node.create_publisher(CompressedImage, f"{NS}/camera/image_raw/compressed",
                                qos_profile_sensor_data)
    frames = _frames(args.width, args.height)
    deadline = time.monotonic() + args.wait_match
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    sent, sizes = 0, []
    period = 1.0 / args.rate
    start = time.monotonic()
    next_t = start
    while time.monotonic() - start < args.seconds:
        msg = numpy_to_compressed(next(frames), "jpeg", quality=args.quality)
        msg.header.frame_id = "camera"
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        sent += 1
        sizes.append(len(msg.data))
    elapsed = time.monotonic() - start
    node.destroy_node()
    rclpy.try_shutdown()
    return {"frames": sent, "bytes": sum(sizes), "seconds": elapsed,
            "mean_jpeg_bytes": sum(sizes) / max(1, len(sizes))}


# ---------------------------------------------------------------- the monitor
class StatusMonitor:
    """Collects the navigator's status records in its own context and spin thread."""

    def __init__(self):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String

        from janus_vln_ros.status import NavigatorStatus

        self._parse = NavigatorStatus.from_json
        self.context = Context()
        rclpy.init(args=[], context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("offboard_monitor", context=self.context)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.lock = threading.Lock()
        self.statuses = []
        self.node.create_subscription(String, f"{NS}/navigator/status", self._on_status, reliable)
        self.instruction = self.node.create_publisher(String, f"{NS}/instruction", latched)
        self.instruction.publish(String(data="walk down the corridor"))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def _on_status(self, msg):
        with self.lock:
            self.statuses.append((time.monotonic(), self._parse(msg.data)))

    def summary(self, since: float) -> dict:
        """Steps, frames received and per-step transport latencies after ``since``."""
        with self.lock:
            items = list(self.statuses)
        seen, transport = set(), []
        for t, s in items:
            key = (s.episode, s.step)
            if t >= since and s.step > 0 and key not in seen and "transport" in s.latency_ms:
                seen.add(key)
                transport.append(s.latency_ms["transport"])
        last = items[-1][1] if items else None
        return {"steps": len(transport), "transport_ms": transport,
                "frames_received": last.frames_received if last else 0,
                "frames_invalid": last.frames_invalid if last else 0}

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        self.context.try_shutdown()


def run_monitor(args) -> dict:
    """``--role monitor``: record statuses for ``args.seconds``; return the summary."""
    monitor = StatusMonitor()
    try:
        start = time.monotonic()
        time.sleep(args.seconds)
        return monitor.summary(start)
    finally:
        monitor.close()


# ---------------------------------------------------------------- orchestration
def navigator_command(ns: str = NS) -> list[str]:
    from janus_vln_ros.sim_eval import param_value

    command = [sys.executable, "-m", "janus_vln_ros.navigator_node", "--ros-args",
               "-r", f"__ns:={ns}"]
    for key, value in NAV_PARAMS.items():
        command += ["-p", f"{key}:={param_value(value)}"]
    return command


def role_command(role: str, args, seconds: float) -> list[str]:
    return [sys.executable, "-m", "benchmarks.offboard_camera", "--role", role,
            "--seconds", str(seconds), "--rate", str(args.rate), "--width", str(args.width),
            "--height", str(args.height), "--quality", str(args.quality)]


def last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no result line in:\n{text[-2000:]}")


def _stop(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)


def measure_localhost(args) -> dict:
    """Camera and navigator as two processes on loopback; this process monitors."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))
    log_dir = Path(tempfile.mkdtemp(prefix="offboard_"))
    nav_log = open(log_dir / "navigator.log", "wb")  # noqa: SIM115 - closed below
    nav = subprocess.Popen(navigator_command(), stdout=nav_log, stderr=subprocess.STDOUT,
                           env=env, cwd=REPO, start_new_session=True)
    monitor = StatusMonitor()
    try:
        camera = subprocess.run(role_command("camera", args, args.seconds + args.warmup),
                                env=env, cwd=REPO, capture_output=True, text=True,
                                timeout=args.seconds + args.warmup + 120)
        if camera.returncode != 0:
            raise RuntimeError(f"camera process failed:\n{camera.stderr[-3000:]}")
        sent = last_json(camera.stdout)
        time.sleep(0.5)
        seen = monitor.summary(0.0)
    finally:
        monitor.close()
        code = _stop(nav)
        nav_log.close()
    return {"camera": sent, "navigator": seen, "navigator_exit": code,
            "navigator_log": str(log_dir / "navigator.log")}


def _sh(command: str) -> str:
    return subprocess.run(shlex.split(command), check=True, capture_output=True,
                          text=True).stdout


def _counter(netns: str, dev: str, name: str) -> int:
    return int(_sh(f"ip netns exec {netns} cat /sys/class/net/{dev}/statistics/{name}"))


def measure_netns(args) -> dict:
    """Camera and navigator in two network namespaces joined by a veth pair (root)."""
    tag = f"{os.getpid() % 10000}"
    cam, nav = f"jcam{tag}", f"jnav{tag}"
    setup = [
        f"ip netns add {cam}", f"ip netns add {nav}",
        f"ip link add vc{tag} type veth peer name vn{tag}",
        f"ip link set vc{tag} netns {cam}", f"ip link set vn{tag} netns {nav}",
        f"ip -n {cam} addr add 10.77.0.1/24 dev vc{tag}",
        f"ip -n {nav} addr add 10.77.0.2/24 dev vn{tag}",
        f"ip -n {cam} link set lo up", f"ip -n {nav} link set lo up",
        f"ip -n {cam} link set vc{tag} up", f"ip -n {nav} link set vn{tag} up",
        f"ip -n {cam} route add 224.0.0.0/4 dev vc{tag}",
        f"ip -n {nav} route add 224.0.0.0/4 dev vn{tag}",
    ]
    if args.netem:
        setup += [f"ip netns exec {cam} tc qdisc add dev vc{tag} root netem {args.netem}",
                  f"ip netns exec {nav} tc qdisc add dev vn{tag} root netem {args.netem}"]
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET", FASTDDS_BUILTIN_TRANSPORTS="UDPv4",
               PYTHONUNBUFFERED="1")
    log_dir = Path(tempfile.mkdtemp(prefix="offboard_netns_"))
    procs = []
    try:
        for command in setup:
            _sh(command)
        total = args.seconds + args.warmup
        nav_log = open(log_dir / "navigator.log", "wb")  # noqa: SIM115 - closed below
        procs.append(subprocess.Popen(["ip", "netns", "exec", nav, *navigator_command()],
                                      stdout=nav_log, stderr=subprocess.STDOUT, env=env,
                                      cwd=REPO, start_new_session=True))
        monitor = subprocess.Popen(
            ["ip", "netns", "exec", nav, *role_command("monitor", args, total + 1.0)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        time.sleep(args.warmup)
        before = {d: _counter(cam, f"vc{tag}", f"{d}_bytes") for d in ("tx", "rx")}
        camera = subprocess.run(
            ["ip", "netns", "exec", cam, *role_command("camera", args, args.seconds)],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=args.seconds + 120)
        after = {d: _counter(cam, f"vc{tag}", f"{d}_bytes") for d in ("tx", "rx")}
        if camera.returncode != 0:
            raise RuntimeError(f"camera process failed:\n{camera.stderr[-3000:]}")
        out, err = monitor.communicate(timeout=total + 60)
        if monitor.returncode != 0:
            raise RuntimeError(f"monitor process failed:\n{err[-3000:]}")
        code = _stop(procs[0])
        nav_log.close()
        return {"camera": last_json(camera.stdout), "navigator": last_json(out),
                "navigator_exit": code, "navigator_log": str(log_dir / "navigator.log"),
                "link_bytes": {"camera_to_navigator": after["tx"] - before["tx"],
                               "navigator_to_camera": after["rx"] - before["rx"]}}
    finally:
        for proc in procs:
            if proc.poll() is None:
                _stop(proc)
        for command in (f"ip netns del {cam}", f"ip netns del {nav}"):
            subprocess.run(shlex.split(command), capture_output=True)


def report(result: dict, args) -> tuple[str, str]:
    """The markdown table and notes for a result."""
    import numpy as np

    from benchmarks.common import markdown_table

    cam, nav = result["camera"], result["navigator"]
    lat = nav["transport_ms"]
    rows = [["JPEG payload sent", f"{cam['bytes'] / cam['seconds'] / 1e6:.3f} MB/s",
             f"{cam['mean_jpeg_bytes'] / 1e3:.1f} kB per frame, {cam['frames']} frames in "
             f"{cam['seconds']:.1f} s"]]
    if "link_bytes" in result:
        link = result["link_bytes"]
        rows.append(["on the link, camera -> navigator",
                     f"{link['camera_to_navigator'] / cam['seconds'] / 1e6:.3f} MB/s",
                     "veth tx bytes: RTPS + UDP/IP headers, discovery included"])
        rows.append(["on the link, navigator -> camera",
                     f"{link['navigator_to_camera'] / cam['seconds'] / 1e6:.4f} MB/s",
                     "discovery and (best effort: no) acknowledgements"])
    if lat:
        p = np.percentile(lat, [50, 95])
        rows.append(["transport latency (stamp -> navigator callback)",
                     f"p50 {p[0]:.2f} ms, p95 {p[1]:.2f} ms, max {max(lat):.2f} ms",
                     f"{len(lat)} steps"])
    table = markdown_table(["quantity", "value", "detail"], rows)
    notes = (
        f"- Mode: {args.mode}" + (f", netem `{args.netem}`" if args.netem else "") + "\n"
        f"- Frames received by the navigator: {nav['frames_received']} of {cam['frames']} sent "
        f"({nav['frames_invalid']} invalid); navigator exit code after SIGINT: "
        f"{result['navigator_exit']}\n"
        f"- Camera: {args.width}x{args.height} JPEG q{args.quality} at {args.rate:g} Hz, best "
        "effort depth 1; rendered by the embedded simulator along demo episode 1"
    )
    return table, notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("bench", "camera", "monitor"), default="bench")
    parser.add_argument("--mode", choices=("localhost", "netns"), default="localhost")
    parser.add_argument("--netem", default="", help="tc netem settings for the veth link")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--wait-match", type=float, default=15.0,
                        help="camera: seconds to wait for a subscriber before publishing")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    if args.role == "camera":
        sys.stdout.write(json.dumps(run_camera(args)) + "\n")
        return 0
    if args.role == "monitor":
        sys.stdout.write(json.dumps(run_monitor(args)) + "\n")
        return 0
    result = measure_netns(args) if args.mode == "netns" else measure_localhost(args)
    table, notes = report(result, args)
    sys.stdout.write(table + "\n\n" + notes + "\n")
    if not args.no_write:
        from benchmarks.common import write_result

        title = f"Off-board camera, {args.width}x{args.height} CompressedImage @ {args.rate:g} Hz"
        title += f", {args.mode}" + (f" ({args.netem})" if args.netem else "")
        write_result("offboard_camera", title, table, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
