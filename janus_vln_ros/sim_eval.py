r"""``janus-vln sim-eval``: a VLN-CE evaluation through the ROS nodes, without the launch tools.

It does what ``ros2 launch janus_vln_ros sim_eval.launch.py`` does, for machines without a full
ROS 2 install: it starts the ``sim_bridge`` and ``navigator`` nodes as processes with the same
node names, parameter files and parameter overrides as the launch file (:func:`node_commands`;
the launch tests check that the two agree), waits until the bridge has a result for every
episode and exits, stops the navigator with SIGINT and prints the metrics table::

    janus-vln sim-eval --model path/to/checkpoint --split data/r2r/val_unseen/val_unseen.json.gz \
        --output-dir outputs/sim_eval/janus
    janus-vln sim-eval --model expert:ros --split ... --limit 10        # the expert over ROS

Before any node starts, the run is checked in this process exactly as the bridge will check it
(:func:`sim_bridge.evaluate.plan_run`: episode file, backend and scenes, the policy's camera
size, a run directory holding another run's results): a mistake ends in one line, and
``--overwrite`` starts a run directory over. The camera size defaults to the checkpoint's.

No orphans: each node runs in its own session (so a Ctrl-C in the terminal reaches only this
supervisor, which stops the nodes in order) and is tied to this process with Linux's
``PR_SET_PDEATHSIG``: if the supervisor dies, even by SIGKILL, the kernel kills both nodes, so
the results file is free and running the same command again resumes at once.

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
import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from janus_core.console import ArgumentParser, add_verbose, fail, interrupted, setup_logging
from sim_bridge.metrics import format_table

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


PR_SET_PDEATHSIG = 1  # linux/prctl.h


class SimEvalError(RuntimeError):
    """The evaluation cannot run or did not finish."""


class Interrupted(SimEvalError):
    """SIGINT / SIGTERM reached the supervisor; the nodes were stopped, results kept."""


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get SIGKILL when ``parent_pid`` dies (Linux).

    ``PR_SET_PDEATHSIG`` survives ``exec``; if the parent is already gone by the time it is set
    (a SIGKILL right after ``fork``), the child kills itself.
    """
    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: no kernel tie
            pass
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


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
            "protocol": args.protocol,
            "width": args.width if args.width is not None else 640,
            "height": args.height if args.height is not None else 480,
            "forward_step": args.forward_step,
            "turn_angle": args.turn_angle,
            "max_steps": args.max_steps,
            "limit": args.limit if args.limit is not None else -1,
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
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=die_with_parent(os.getpid()))
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
                raise Interrupted(f"signal {stop['signal']}")
            if deadline is not None and time.monotonic() > deadline:
                raise SimEvalError(f"not finished after --timeout {args.timeout} s")
            code = children["sim_bridge"].poll()
            if code == 0:
                break
            nav = children["navigator"]
            if CONFIGURE_FAILED in nav.tail(20000):
                raise SimEvalError(f"the navigator cannot load model {args.model!r}: "
                                   f"{_reason(nav.tail(20000), CONFIGURE_FAILED)} (log: "
                                   f"{nav.log_path})")
            dead = {n: code for n in NODES if (code := children[n].poll()) is not None}
            if not dead:
                continue
            for name, code in dead.items():
                child = children[name]
                if name == "sim_bridge" and code == START_FAILED:
                    raise SimEvalError(f"sim_bridge cannot start: "
                                       f"{_reason(child.tail(), 'cannot start')} (log: "
                                       f"{child.log_path})")
                deaths[name] += 1
                if deaths[name] > args.max_restarts:
                    raise SimEvalError(
                        f"{name} exited with code {code} and was restarted {args.max_restarts} "
                        f"times already (log: {child.log_path})"
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


def _reason(log_text: str, marker: str) -> str:
    """The first log line that says why a node gave up (from ``marker`` on), else its last."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in lines:
        if marker in line:
            return line[line.index(marker):]
    return lines[-1] if lines else "no output"


def _node_section(path: Path, node: str) -> dict[str, Any]:
    """The ``ros__parameters`` a params file gives node ``node`` (``node``, ``/**/node``...)."""
    from janus_core.config import read_yaml_mapping

    out: dict[str, Any] = {}
    for key, block in read_yaml_mapping(path, SimEvalError, "params file").items():
        name = str(key).rstrip("/").rsplit("/", 1)[-1]
        if name in (node, "**", "*") and isinstance(block, dict):
            out.update(block.get("ros__parameters") or {})
    return out


def bridge_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The sim_bridge's parameters as the node will get them (files, then overrides)."""
    import yaml

    from janus_vln_ros.sim_bridge_params import DEFAULTS

    values = dict(DEFAULTS)
    files = [share_path(f) for f in NODES["sim_bridge"][1]] + [Path(f) for f in
                                                              args.params_file or ()]
    for file in files:
        values.update(_node_section(file, "sim_bridge"))
    values.update(launch_parameters(args)["sim_bridge"])
    for item in args.bridge_param or ():
        name, sep, raw = item.partition(":=")
        if not sep:
            raise SimEvalError(f"--bridge-param {item!r}: expected NAME:=VALUE")
        values[name.strip()] = yaml.safe_load(raw)
    return values


def preflight(args: argparse.Namespace) -> None:
    """Check the run as the bridge will, before starting any node (see the module docstring).

    Fills in ``args.width`` / ``args.height`` from the checkpoint when not given, deletes an
    earlier run with ``--overwrite``, writes ``run.json``. Raises SimEvalError (one line).
    """
    from janus_vln_ros.sim_bridge_params import SimBridgeConfigError, SimBridgeParams
    from sim_bridge.backends import BackendError
    from sim_bridge.evaluate import USER_ERRORS, EvalConfig, plan_run, resolve_camera

    try:
        camera = resolve_camera(EvalConfig(policy=args.model, width=args.width,
                                           height=args.height))
        args.width, args.height = camera.width, camera.height
        params = SimBridgeParams.from_mapping(bridge_parameters(args))
        cfg = dataclasses.replace(params.eval_config(), overwrite=args.overwrite)
        plan_run(cfg).close()
    except (*USER_ERRORS, SimBridgeConfigError, BackendError) as err:
        raise SimEvalError(str(err)) from None


def _parser() -> argparse.ArgumentParser:
    from sim_bridge.protocol import DEFAULT_PROTOCOL, PROTOCOLS

    p = ArgumentParser(
        prog="janus-vln sim-eval",
        description="Evaluate a navigator policy on VLN-CE episodes through the ROS nodes "
        "(sim_bridge + navigator), like launch/sim_eval.launch.py without the launch tools. "
        "The results table goes to stdout, logs to stderr.",
    )
    p.add_argument("--model", required=True,
                   help="navigator model: checkpoint dir | tiny | full | random | forward | "
                   "expert:ros (the simulator's expert behind the navigator interface)")
    p.add_argument("--split", required=True, help="episode file (R2R/RxR VLN-CE .json(.gz))")
    p.add_argument("--output-dir", default="outputs/sim_eval", help="run directory (resumable)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the results of an earlier run in --output-dir first")
    p.add_argument("--namespace", default="", help="ROS namespace of both nodes")
    p.add_argument("--backend", default="embedded", help="embedded | habitat | auto")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, choices=sorted(PROTOCOLS),
                   help=f"episode-ending rules (default {DEFAULT_PROTOCOL}): vlnce = VLN-CE, "
                   "release = the JanusVLN release (STOP forced at step 400)")
    p.add_argument("--width", type=int, help="camera width (default: the checkpoint's, or 640)")
    p.add_argument("--height", type=int, help="camera height (default: the checkpoint's, or 480)")
    p.add_argument("--forward-step", type=float, default=0.25, help="m per MOVE_FORWARD")
    p.add_argument("--turn-angle", type=float, default=15.0, help="degrees per turn")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--limit", type=int, help="only the first N episodes (sorted by scene, id)")
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
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"),
                   help="the nodes' log level (in their log files)")
    return add_verbose(p)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``janus-vln sim-eval``; returns the exit code.

    0: every episode scored; 1: an episode errored, none was scored, or a node kept failing;
    2: a mistake in what was asked (one line); 130: interrupted (results kept, rerun resumes).
    """
    from sim_bridge.evaluate import EvalError, merge, outcome_code, table_notes

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging(args.verbose)
    out = Path(args.output_dir)
    try:
        preflight(args)
    except SimEvalError as err:
        return fail("sim-eval", err)
    try:
        data = run(args)
    except Interrupted:
        try:
            data = merge(out)
        except EvalError:
            return interrupted("sim-eval", "nothing finished; rerun the same command to start")
        return interrupted("sim-eval", f"{data['finished']} of {data['expected']} episodes "
                           f"finished, partial metrics in {out / 'metrics.json'}; rerun the same "
                           "command to resume")
    except SimEvalError as err:
        return fail("sim-eval", err, code=1)
    settings = data.get("settings", {})
    title = f"{settings.get('policy', args.model)} on {Path(args.split).name} (through ROS)"
    sys.stdout.write(format_table(data["summary"], title=title, notes=table_notes(data)))
    log.info("metrics in %s", out / "metrics.json")
    return outcome_code(data["scored"], data["errors"]) or int(not data["complete"])


if __name__ == "__main__":
    sys.exit(main())
