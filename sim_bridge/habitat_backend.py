"""The habitat-sim backend: real VLN-CE scenes (MP3D .glb) through an out-of-process worker.

habitat-sim is published for Python 3.9 (conda, aihabitat channel) while this package needs
Python >= 3.10 (ROS 2 Kilted: 3.12). :class:`HabitatSimulator` therefore never imports
habitat_sim: it starts :mod:`sim_bridge.habitat_worker` as a script under the interpreter that
has habitat-sim (``SimConfig.habitat_python``, else ``$JANUS_HABITAT_PYTHON``, else this
interpreter) and drives it over two pipes, with the RGB and depth frames in two
``multiprocessing.shared_memory`` blocks that the worker renders into (no pixel goes through the
pipe; each observation copies the frame once out of the block, so it stays valid after the next
step). docs/habitat.md is the recipe from nothing to an R2R-CE evaluation.

The agent is VLN-CE's (habitat-lab's defaults as JanusVLN's ``config/vln_r2r.yaml`` uses them): a
cylinder ``agent_height`` x ``agent_radius``, RGB + depth pinhole cameras of ``width`` x ``height``
and ``hfov_deg`` mounted ``camera_height`` above the floor, ``forward_step`` metres and
``turn_angle`` degrees per action, ``allow_sliding`` along walls. RxR-CE changes several of these
(config/eval_rxr.yaml). Scene ids are resolved as VLN-CE does: a leading
``data/scene_datasets/`` is stripped, then the id is joined with ``scenes_dir``.

Failures are one line each. A worker whose interpreter is missing, cannot import habitat_sim or
cannot be restarted raises :class:`HabitatUnavailableError` (a
:class:`~sim_bridge.simulator.BackendUnavailableError`: an evaluation stops, keeping its finished
episodes). A worker that dies or stops answering (``habitat_timeout_s``) during an episode
raises :class:`HabitatWorkerError` for that episode; the next :meth:`HabitatSimulator.reset`
starts a new worker.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from janus_core.actions import Action
from sim_bridge import habitat_worker
from sim_bridge.habitat_worker import ProtocolError, read_message, write_message
from sim_bridge.simulator import (
    BackendUnavailableError,
    SimConfig,
    SimObservation,
    Simulator,
    TopDownMap,
    check_episode_start,
    check_point,
    quaternion_to_yaw,
    yaw_to_quaternion,
)

log = logging.getLogger(__name__)

PYTHON_ENV = "JANUS_HABITAT_PYTHON"
WORKER_SCRIPT = Path(habitat_worker.__file__).resolve()
INSTALL_HINT = (
    "habitat-sim comes from conda for Python 3.9: conda create -n habitat python=3.9 "
    "cmake=3.14.0 -y && conda install -n habitat -y habitat-sim=0.2.4 withbullet headless "
    "-c conda-forge -c aihabitat; then give the worker that interpreter: --set "
    f"sim.habitat_python=<env>/bin/python or {PYTHON_ENV}=<env>/bin/python (docs/habitat.md); "
    "without habitat-sim use SimConfig(backend='embedded')"
)
MAX_RESTARTS = 3  # worker deaths in a row (no successful step between) before giving up

_ACTION_KEYS = {Action.MOVE_FORWARD: "move_forward", Action.TURN_LEFT: "turn_left",
                Action.TURN_RIGHT: "turn_right"}
_KEY_ACTIONS = {v: k for k, v in _ACTION_KEYS.items()}


class HabitatUnavailableError(BackendUnavailableError, ImportError):
    """The habitat worker cannot run at all (no interpreter, no habitat_sim, no restart)."""


class HabitatWorkerError(RuntimeError):
    """The worker died, hung or failed a request; the message is one line naming which."""


def worker_python(cfg: SimConfig) -> str:
    """The interpreter for the worker: ``cfg.habitat_python``, ``$JANUS_HABITAT_PYTHON``, ours."""
    return cfg.habitat_python or os.environ.get(PYTHON_ENV) or sys.executable


def resolve_scene(scene_id: str, scenes_dir: str | Path) -> Path:
    """The scene file of ``scene_id``, resolved as VLN-CE's habitat_extensions/task.py does.

    A leading ``data/scene_datasets/`` is stripped, then relative ids are joined with
    ``scenes_dir``.
    """
    path = Path(habitat_worker.strip_scene_prefix(scene_id))
    return path if path.is_absolute() else Path(scenes_dir) / path


def _last_line(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class WorkerProcess:
    """One worker subprocess: started with a hello handshake, asked one request at a time."""

    def __init__(self, python: str, start_timeout: float):
        self.python = python
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.info: dict[str, Any] = {}
        self._read_fd = self._write_fd = -1
        self._start(start_timeout)

    @property
    def pid(self) -> int | None:
        """The worker's process id (None when not running)."""
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def _start(self, timeout: float) -> None:
        exe = shutil.which(self.python) or self.python
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            raise HabitatUnavailableError(
                f"habitat worker: Python interpreter {self.python!r} not found or not executable "
                f"(set sim.habitat_python or {PYTHON_ENV} to the bin/python of the environment "
                "that has habitat-sim; docs/habitat.md)")
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        fd, name = tempfile.mkstemp(prefix="habitat-worker-", suffix=".log")
        self.log_path = Path(name)
        try:
            self.proc = subprocess.Popen(
                [exe, str(WORKER_SCRIPT), "--read-fd", str(to_worker_r),
                 "--write-fd", str(from_worker_w)],
                pass_fds=(to_worker_r, from_worker_w), stdin=subprocess.DEVNULL, stdout=fd,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            for f in (to_worker_r, to_worker_w, from_worker_r, from_worker_w):
                os.close(f)
            raise HabitatUnavailableError(f"habitat worker: cannot run {exe!r}: {exc}") from None
        finally:
            os.close(fd)
        os.close(to_worker_r)
        os.close(from_worker_w)
        self._read_fd, self._write_fd = from_worker_r, to_worker_w
        try:
            hello = read_message(self._read_fd, time.monotonic() + timeout)
        except TimeoutError:
            self.kill()
            raise HabitatUnavailableError(
                f"habitat worker ({exe}) did not start within {timeout:g} s; stopped it "
                f"(log: {self.log_path})") from None
        except ProtocolError:
            status = self._wait_status(5.0)
            last = _last_line(self.log_path)
            self.kill()
            raise HabitatUnavailableError(
                f"habitat worker ({exe}) {status} before its hello: {last!r} (a Python >= 3.9 "
                f"with numpy is needed; log: {self.log_path})") from None
        if hello.get("error"):
            self.kill()
            self.log_path.unlink(missing_ok=True)  # the error line says it all
            raise HabitatUnavailableError(
                f"habitat worker: {exe} {hello['error']}. {INSTALL_HINT}")
        if hello.get("hello") != habitat_worker.PROTOCOL_VERSION:
            self.kill()
            raise HabitatUnavailableError(
                f"habitat worker: protocol {hello.get('hello')!r}, expected "
                f"{habitat_worker.PROTOCOL_VERSION} (a stale {WORKER_SCRIPT.name}?)")
        self.info = hello
        log.info("habitat worker pid %s: habitat-sim %s on Python %s (%s; log %s)", self.pid,
                 hello.get("habitat_sim"), hello.get("python"), exe, self.log_path)

    def _wait_status(self, timeout: float) -> str:
        """'exited with status N' / 'was killed by SIGX' / 'is still running' after ``timeout``."""
        if self.proc is None:
            return "is not running"
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return "is still running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"

    def request(self, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``op`` and wait for its reply (HabitatWorkerError when the worker is gone)."""
        if not self.alive():
            raise HabitatWorkerError(f"habitat worker (pid {self.pid}) {self._wait_status(0.1)} "
                                     f"before {op!r}; last log line: "
                                     f"{_last_line(self.log_path)!r} (log: {self.log_path})")
        try:
            write_message(self._write_fd, {"op": op, "args": args})
            reply = read_message(self._read_fd, time.monotonic() + timeout)
        except TimeoutError:
            pid = self.pid
            self.kill()
            raise HabitatWorkerError(
                f"habitat worker (pid {pid}) did not answer {op!r} within {timeout:g} s; stopped "
                f"it (habitat_timeout_s; log: {self.log_path})") from None
        except (ProtocolError, OSError):
            pid, status = self.pid, self._wait_status(5.0)
            last = _last_line(self.log_path)
            self.kill()
            raise HabitatWorkerError(
                f"habitat worker (pid {pid}) {status} during {op!r}; last log line: {last!r} "
                f"(log: {self.log_path})") from None
        if reply.get("ok"):
            return reply.get("result") or {}
        kind, error = reply.get("kind", "Error"), reply.get("error", "")
        if kind == "ValueError":
            raise ValueError(error)
        raise HabitatWorkerError(f"habitat worker: {op} failed: {kind}: {error}")

    def kill(self) -> None:
        """Stop the process now and close the pipes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("habitat worker pid %s did not exit after SIGKILL", self.proc.pid)
        self._close_fds()

    def close(self, timeout: float = 10.0) -> None:
        """Ask the worker to close habitat-sim and exit; kill it if it does not."""
        if self.alive():
            try:
                write_message(self._write_fd, {"op": "close", "args": {}})
                read_message(self._read_fd, time.monotonic() + timeout)
                self.proc.wait(timeout=timeout)
            except (TimeoutError, ProtocolError, OSError, subprocess.TimeoutExpired):
                log.warning("habitat worker pid %s did not close cleanly; killing it", self.pid)
        clean = self.proc is not None and self.proc.poll() == 0
        self.kill()
        if clean and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def _close_fds(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._read_fd = self._write_fd = -1


class HabitatSimulator(Simulator):
    """VLN-CE on habitat-sim (out of process); see the module docstring."""

    def __init__(self, cfg: SimConfig | None = None):
        self.config = cfg or SimConfig(backend="habitat")
        h, w = int(self.config.height), int(self.config.width)
        self._rgb_block = shared_memory.SharedMemory(create=True, size=h * w * 3)
        self._depth_block = shared_memory.SharedMemory(create=True, size=h * w * 4)
        self._rgb = np.ndarray((h, w, 3), np.uint8, buffer=self._rgb_block.buf)
        self._depth = np.ndarray((h, w), np.float32, buffer=self._depth_block.buf)
        self._worker: WorkerProcess | None = None
        self._deaths_in_a_row = 0
        self._scene_path: Path | None = None
        self.navmesh_source: str | None = None  # "loaded" | "computed" | "kept": the last scene's
        self._episode = None
        self._position = np.zeros(3)
        self._rotation = [0.0, 0.0, 0.0, 1.0]
        self._last: SimObservation | None = None
        try:
            self._ensure_worker()
        except BaseException:
            self._release_blocks()
            raise

    # ---- the worker ------------------------------------------------------------------------

    @property
    def worker(self) -> WorkerProcess | None:
        """The running worker process (None before the first start or after a death)."""
        return self._worker

    def _settings(self) -> dict[str, Any]:
        c = self.config
        return {
            "width": int(c.width), "height": int(c.height), "hfov_deg": float(c.hfov_deg),
            "camera_height": float(c.camera_height), "agent_height": float(c.agent_height),
            "agent_radius": float(c.agent_radius), "forward_step": float(c.forward_step),
            "turn_angle": float(c.turn_angle), "allow_sliding": bool(c.allow_sliding),
            "seed": int(c.seed), "gpu_device_id": int(c.gpu_device_id),
            "depth_min": float(c.depth_min), "depth_max": float(c.depth_max),
            "expert_stop_radius": float(c.expert_stop_radius),
            "rgb_shm": self._rgb_block.name, "depth_shm": self._depth_block.name,
        }

    def _ensure_worker(self) -> WorkerProcess:
        if self._worker is not None and self._worker.alive():
            return self._worker
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
            self._deaths_in_a_row += 1
            self._scene_path = None
            if self._deaths_in_a_row >= MAX_RESTARTS:
                raise HabitatUnavailableError(
                    f"habitat worker died {self._deaths_in_a_row} times in a row; not restarting "
                    "it (see the errors of the last episodes)")
            log.warning("habitat worker is gone; starting a new one")
        worker = WorkerProcess(worker_python(self.config),
                               float(self.config.habitat_load_timeout_s))
        try:
            worker.request("configure", self._settings(), float(self.config.habitat_timeout_s))
        except (HabitatWorkerError, ValueError) as exc:
            worker.kill()
            raise HabitatUnavailableError(f"habitat worker: configure failed: {exc}") from None
        self._worker = worker
        return worker

    def _call(self, op: str, args: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        if self._worker is None:
            raise HabitatWorkerError(f"habitat worker is not running ({op}); reset an episode "
                                     "to start a new one")
        try:
            return self._worker.request(op, args, timeout or float(self.config.habitat_timeout_s))
        except HabitatWorkerError:
            if not self._worker.alive():
                self._episode = None  # the next reset restarts the worker and reloads the scene
            raise

    def _take(self, reply: dict[str, Any]) -> SimObservation:
        """Pose from a rendering reply, frames copied out of the shared blocks."""
        self._position = np.asarray(reply["position"], dtype=float)
        self._rotation = [float(v) for v in reply["rotation"]]
        self._last = SimObservation(self._rgb.copy(), self._depth.copy(), self._position.copy(),
                                    quaternion_to_yaw(self._rotation), bool(reply["collided"]))
        return self._last

    def _require(self, what: str) -> None:
        if self._episode is None:
            raise RuntimeError(f"{what}: call reset(episode) first")

    # ---- episodes --------------------------------------------------------------------------

    def load_scene(self, scene_id: str) -> Path:
        """Open (or keep) the scene of ``scene_id``; its navmesh is made to fit the agent."""
        path = resolve_scene(scene_id, self.config.scenes_dir)
        if not path.is_file():
            raise ValueError(f"habitat scene {scene_id!r} not found at {path} (set "
                             "SimConfig.scenes_dir to your scene_datasets directory)")
        self._ensure_worker()
        if path != self._scene_path:
            self._scene_path = None
            reply = self._call("load_scene",
                               {"path": str(path), "navmesh": self.config.habitat_navmesh},
                               float(self.config.habitat_load_timeout_s))
            self.navmesh_source = reply.get("navmesh")
            log.info("habitat scene %s: navmesh %s", path, self.navmesh_source)
            self._scene_path = path
        return path

    def reset(self, episode) -> SimObservation:
        """Load the scene and place the agent at the episode start (ValueError on bad fields)."""
        checked = check_episode_start(episode)
        eid, start, rot = checked.label, checked.position, checked.rotation
        self._episode = None
        try:
            self.load_scene(episode.scene_id)
        except ValueError as exc:
            raise ValueError(f"{eid}: field scene_id: {exc}") from None
        if not self._call("is_navigable", {"point": start.tolist()})["navigable"]:
            raise ValueError(f"{eid}: field start_position {start.tolist()} is not on "
                             f"the navmesh of {episode.scene_id}")
        obs = self._take(self._call("set_state", {"position": start.tolist(),
                                                  "rotation": rot.tolist()}))
        self._episode = episode
        return obs

    @property
    def episode(self):
        """The current episode (None before the first reset)."""
        return self._episode

    # ---- acting ----------------------------------------------------------------------------

    def step(self, action: Action | int) -> SimObservation:
        """Execute one action (STOP does not move and reports no collision)."""
        self._require("step")
        try:
            action = Action(int(action))
        except (TypeError, ValueError):
            raise ValueError(f"step: {action!r} is not an action; expected one of "
                             f"{[f'{a.name}={int(a)}' for a in Action]}") from None
        if action == Action.STOP:
            last = self.observe()
            self._last = SimObservation(last.rgb, last.depth, last.position, last.yaw, False)
            return self._last
        obs = self._take(self._call("step", {"action": _ACTION_KEYS[action]}))
        self._deaths_in_a_row = 0
        return obs

    def observe(self) -> SimObservation:
        """The sensors at the current pose."""
        self._require("observe")
        if self._last is None:
            self._take(self._call("observe", {}))
        return self._last

    def set_agent_state(self, position, yaw: float) -> SimObservation:
        """Teleport onto the navmesh (ValueError off it) facing ``yaw``."""
        self._require("set_agent_state")
        p = check_point(position, 3, "set_agent_state: position")
        if not self.is_navigable(p):
            raise ValueError(f"set_agent_state: position {p.tolist()} is not on the navmesh")
        return self._take(self._call("set_state", {"position": p.tolist(),
                                                   "rotation": yaw_to_quaternion(float(yaw))}))

    @property
    def position(self) -> np.ndarray:
        """The agent's (x, y, z)."""
        return self._position.copy()

    @property
    def yaw(self) -> float:
        """The agent's heading (radians)."""
        return quaternion_to_yaw(self._rotation)

    # ---- navigation queries ----------------------------------------------------------------

    def _require_scene(self, what: str) -> None:
        if self._scene_path is None:
            raise RuntimeError(f"{what}: call reset(episode) first")

    def geodesic_distance(self, a, b) -> float:
        """Navmesh shortest-path distance from ``a`` to ``b`` (inf if there is no path)."""
        self._require_scene("geodesic_distance")
        reply = self._call("geodesic_distance", {
            "a": check_point(a, 3, "geodesic_distance: a").tolist(),
            "b": check_point(b, 3, "geodesic_distance: b").tolist()})
        return math.inf if reply["distance"] is None else float(reply["distance"])

    def is_navigable(self, point) -> bool:
        """Whether ``point`` is on the navmesh (habitat's PathFinder.is_navigable)."""
        self._require_scene("is_navigable")
        p = check_point(point, 3, "is_navigable: point")
        return bool(self._call("is_navigable", {"point": p.tolist()})["navigable"])

    def snap_point(self, point) -> np.ndarray | None:
        """The closest navmesh point to ``point`` (None when habitat finds none)."""
        self._require_scene("snap_point")
        p = check_point(point, 3, "snap_point: point")
        snapped = self._call("snap_point", {"point": p.tolist()})["point"]
        return None if snapped is None else np.asarray(snapped, dtype=float)

    def sample_navigable_point(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """A random navmesh point (the pathfinder is seeded from ``rng`` when given)."""
        self._require_scene("sample_navigable_point")
        seed = None if rng is None else int(rng.integers(2**31 - 1))
        return np.asarray(self._call("sample_point", {"seed": seed})["point"], dtype=float)

    def expert_action(self, goal=None) -> Action:
        """GreedyGeodesicFollower's next action (STOP within the stop radius or without path)."""
        self._require("expert_action")
        target = self._episode.goals[0].position if goal is None else goal
        target = check_point(target, 3, "expert_action: goal")
        reply = self._call("expert_action", {"goal": target.tolist()})
        if reply.get("error"):
            log.warning("expert: %s %s; answering STOP", reply["error"], target.tolist())
            return Action.STOP
        return Action.STOP if reply["action"] is None else _KEY_ACTIONS[reply["action"]]

    def top_down_map(self, meters_per_pixel: float = 0.05) -> TopDownMap:
        """The navmesh at the agent's floor height, navigable white, the rest grey."""
        self._require("top_down_map")
        reply = self._call("top_down", {"meters_per_pixel": float(meters_per_pixel),
                                        "height": float(self._position[1])})
        shape = tuple(int(v) for v in reply["shape"])
        bits = np.frombuffer(base64.b64decode(reply["bits"]), dtype=np.uint8)
        navigable = np.unpackbits(bits)[: shape[0] * shape[1]].reshape(shape).astype(bool)
        image = np.where(navigable[..., None], np.uint8(248), np.uint8(190)).repeat(3, axis=2)
        lower = reply["lower"]
        return TopDownMap(image=image.astype(np.uint8), navigable=navigable,
                          meters_per_pixel=meters_per_pixel,
                          origin=(float(lower[0]), float(lower[2])))

    # ---- life ------------------------------------------------------------------------------

    def _release_blocks(self) -> None:
        self._rgb = self._depth = None
        for block in (self._rgb_block, self._depth_block):
            block.close()
            try:
                block.unlink()
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Stop the worker (it closes habitat-sim) and free the frame blocks."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self._rgb is not None:
            self._last = None
            self._release_blocks()
        self._episode = None
        self._scene_path = None
