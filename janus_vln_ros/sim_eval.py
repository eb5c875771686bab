r"""``janus-vln sim-eval``: a VLN-CE evaluation through the ROS nodes, without the launch tools.

It does what ``ros2 launch janus_vln_ros sim_eval.launch.py`` does, for machines without a full
ROS 2 install: it starts the ``sim_bridge`` and ``navigator`` nodes as processes with the same
node names, parameter files and parameter overrides as the launch file (:func:`node_commands`;
the launch tests check that the two agree), waits until the bridge has a result for every
episode and exits, stops the navigator with SIGINT and prints the metrics table::

    janus-vln sim-eval --model path/to/checkpoint --split data/r2r/val_unseen/val_unseen.json.gz \
        --output-dir outputs/sim_eval/janus
    janus-vln sim-eval --model expert:ros --split ... --limit 10        # the expert over ROS

Restarts: when a node dies (crash, OOM kill, SIGKILL), both nodes are stopped and started again,
up to ``--max-restarts`` times per node; the bridge resumes from the results file and the
episode that was running starts again from its beginning, so nothing is lost or counted twice.
The survivor is restarted too because a peer killed mid-message can leave Fast DDS's
shared-memory transport unable to deliver to it. Running the same
command again after an interruption resumes the run the same way.

Each node's output goes to ``<output-dir>/logs/<node>-<n>.log``. ROS isolation: unless already
set, ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and the package's Fast DDS profile (large
images over shared memory) are set for both nodes; use ``--namespace`` or ``--domain-id`` to
run several evaluations side by side.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PACKAGE = "janus_vln_ros"
# node name -> (module run with ``python -m``, parameter files in order, from the share dir)
NODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sim_bridge": (
        "janus_vln_ros.sim_bridge_node", ("config/sim_bridge.yaml", "config/sim_eval.yaml")
    ),
    "navigator": (
        "janus_vln_ros.navigator_node", ("config/navigator.yaml", "config/sim_eval.yaml")
    ),
}
FASTDDS_PROFILE = "config/fastdds_shm.xml"
CONFIGURE_FAILED = "configure failed"  # the navigator's log line when its policy cannot load
START_FAILED = 2  # the bridge's exit code for bad parameters / split / run dir: no restart


class SimEvalError(RuntimeError):
    """The evaluation cannot run or did not finish."""


def share_path(relative: str) -> Path:
    """A file of the package's share directory (colcon install), else of the source tree."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        try:
            path = Path(get_package_share_directory(PACKAGE)) / relative
            if path.exists():
                return path
        except (PackageNotFoundError, OSError):  # not installed, or no AMENT_PREFIX_PATH
            pass
    except ImportError:
        pass
    path = Path(__file__).resolve().parents[1] / relative
    if not path.exists():
        raise SimEvalError(f"{relative} is neither installed (share/{PACKAGE}) nor in the source")
    return path


def launch_parameters(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The parameter overrides each node gets (the launch file sets exactly these)."""
    return {
        "sim_bridge": {
            "split": str(args.split),
            "output_dir": str(args.output_dir),
            "policy_label": args.model,
            "backend": args.backend,
            "width": args.width,
            "height": args.height,
            "forward_step": args.forward_step,
            "turn_angle": args.turn_angle,
            "max_steps": args.max_steps,
            "limit": args.limit,
            "episode_ids": args.episode_ids,
            "sim_settings": args.sim_settings,
            "exit_when_done": True,
        },
        "navigator": {
            "model": args.model,
            "autostart": True,
            "forward_distance": args.forward_step,
            "turn_angle": args.turn_angle,
            "max_steps": args.max_steps,
        },
    }


def param_value(value: Any) -> str:
    """A value as ``-p name:=value`` reads it (YAML): strings stay strings, floats keep a point."""
    import yaml

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and (value == "" or not isinstance(yaml.safe_load(value), str)):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def node_commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """The command line of each node: ``python -m <module> --ros-args`` + name, files, values."""
    overrides = launch_parameters(args)
    commands = {}
    for name, (module, files) in NODES.items():
        command = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
        if args.namespace:
            command += ["-r", f"__ns:=/{args.namespace.strip('/')}"]
        for relative in files:
            command += ["--params-file", str(share_path(relative))]
        for extra in args.params_file or ():
            command += ["--params-file", str(extra)]
        for key, value in overrides[name].items():
            command += ["-p", f"{key}:={param_value(value)}"]
        for item in (args.bridge_param if name == "sim_bridge" else args.navigator_param) or ():
            command += ["-p", item]
        command += ["--log-level", args.log_level]
        commands[name] = command
    return commands


def node_environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment of both nodes: ROS isolation and the Fast DDS profile unless set."""
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(args.domain_id)
    if not env.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(share_path(FASTDDS_PROFILE))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
    return env


class _Child:
    """One node process in its own session, its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path,
                 number: int):
        self.name = name
        self.log_path = log_dir / f"{name}-{number}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()/reap()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.info("started %s (pid %d), log %s", name, self.proc.pid, self.log_path)

    def poll(self) -> int | None:
        return self.proc.poll()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT, wait; SIGKILL the process group if it does not exit."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("%s ignored SIGINT for %.0f s; killing it", self.name, timeout)
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start both nodes, keep them alive until the split is done, stop them; merge's summary."""
    from sim_bridge.evaluate import merge

    out = Path(args.output_dir)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    commands, env = node_commands(args), node_environment(args)
    starts = dict.fromkeys(NODES, 0)  # processes started (log file numbers)
    deaths = dict.fromkeys(NODES, 0)  # unexpected exits (restarts)
    children: dict[str, _Child] = {}

    def start(name: str) -> None:
        starts[name] += 1
        children[name] = _Child(name, commands[name], env, log_dir, starts[name])

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        start("sim_bridge")
        start("navigator")
        while True:
            time.sleep(0.2)
            if stop["signal"] is not None:
                raise SimEvalError(f"interrupted (signal {stop['signal']}); run the same "
                                   "command again to resume")
            if deadline is not None and time.monotonic() > deadline:
                raise SimEvalError(f"not finished after --timeout {args.timeout} s")
            code = children["sim_bridge"].poll()
            if code == 0:
                break
            nav = children["navigator"]
            if CONFIGURE_FAILED in nav.tail(20000):
                raise SimEvalError(f"the navigator cannot load model {args.model!r}; its log "
                                   f"({nav.log_path}):\n{nav.tail()}")
            dead = {n: code for n in NODES if (code := children[n].poll()) is not None}
            if not dead:
                continue
            for name, code in dead.items():
                child = children[name]
                if name == "sim_bridge" and code == START_FAILED:
                    raise SimEvalError(f"sim_bridge cannot start; its log ({child.log_path}):\n"
                                       f"{child.tail()}")
                deaths[name] += 1
                if deaths[name] > args.max_restarts:
                    raise SimEvalError(
                        f"{name} exited with code {code} and was restarted {args.max_restarts} "
                        f"times already; its log ({child.log_path}):\n{child.tail()}"
                    )
                log.warning("%s exited with code %s; starting both nodes again (%d of %d "
                            "restarts)", name, code, deaths[name], args.max_restarts)
            # the survivor too: a peer killed mid-message can leave Fast DDS's shared-memory
            # transport unable to deliver to it (eProsima/Fast-DDS#5469), seen here as a
            # navigator that never got another camera frame from the restarted bridge
            for name in NODES:
                children[name].stop()
            start("sim_bridge")
            start("navigator")
    finally:
        for name in ("navigator", "sim_bridge"):
            if name in children:
                code = children[name].stop()
                if code not in (0, None):
                    log.debug("%s exited with code %s", name, code)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return merge(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="janus-vln sim-eval",
        description="Evaluate a navigator policy on VLN-CE episodes through the ROS nodes "
        "(sim_bridge + navigator), like launch/sim_eval.launch.py without the launch tools.",
    )
    p.add_argument("--model", required=True,
                   help="navigator model: checkpoint dir | tiny | full | random | forward | "
                   "expert:ros (the simulator's expert behind the navigator interface)")
    p.add_argument("--split", required=True, help="episode file (R2R/RxR VLN-CE .json(.gz))")
    p.add_argument("--output-dir", default="outputs/sim_eval", help="run directory (resumable)")
    p.add_argument("--namespace", default="", help="ROS namespace of both nodes")
    p.add_argument("--backend", default="embedded", choices=("embedded", "habitat", "auto"))
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--forward-step", type=float, default=0.25, help="m per MOVE_FORWARD")
    p.add_argument("--turn-angle", type=float, default=15.0, help="degrees per turn")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--limit", type=int, default=-1, help="first N episodes; -1: all")
    p.add_argument("--episode-ids", default="", help="comma-separated episode ids")
    p.add_argument("--sim-settings", default="{}",
                   help="other simulator settings, YAML, e.g. '{furniture: shapes}'")
    p.add_argument("--params-file", action="append",
                   help="extra ROS params YAML for both nodes (after the package's files)")
    p.add_argument("--bridge-param", action="append", metavar="NAME:=VALUE",
                   help="another sim_bridge parameter")
    p.add_argument("--navigator-param", action="append", metavar="NAME:=VALUE",
                   help="another navigator parameter")
    p.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID for both nodes")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="times each node is started again after dying")
    p.add_argument("--timeout", type=float, default=0.0, help="give up after this many s; 0: never")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``janus-vln sim-eval``; returns the exit code."""
    from sim_bridge.metrics import format_table

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        data = run(args)
    except SimEvalError as err:
        log.error("%s", err)
        return 1
    settings = data.get("settings", {})
    title = f"{settings.get('policy', args.model)} on {Path(args.split).name} (through ROS)"
    sys.stdout.write(format_table(data["summary"], title=title))
    sys.stdout.write(f"\n{data['finished']} of {data['expected']} episodes; metrics in "
                     f"{Path(args.output_dir) / 'metrics.json'}\n")
    return 0 if data["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
