"""The habitat-sim worker: habitat-sim in its own interpreter, driven over a pipe.

habitat-sim's conda builds are Python 3.9 only (the aihabitat channel; habitat-sim issues #2289
and #2625), while this package needs Python >= 3.10 and ROS 2 Kilted runs 3.12. So
:class:`sim_bridge.habitat_backend.HabitatSimulator` starts this file as a script under the
interpreter that has habitat-sim (``SimConfig.habitat_python``, e.g. the conda env's
``bin/python``) and talks to it through two pipes::

    <habitat python> .../sim_bridge/habitat_worker.py --read-fd R --write-fd W

This module must therefore import nothing but habitat_sim, numpy and the standard library, and
parse as Python 3.9 (``test_habitat_backend.py`` checks both). It is not imported as part of the
package in the worker; the package imports it only for the message framing below.

Protocol (one request, one reply, in order):

- a message is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON;
- the worker first sends ``{"hello": PROTOCOL_VERSION, "habitat_sim": version, "python": ...}``
  or, when ``import habitat_sim`` fails, ``{"hello": PROTOCOL_VERSION, "error": "..."}`` and
  exits with status 3;
- each request is ``{"op": name, "args": {...}}``; each reply ``{"ok": true, "result": {...}}``
  or ``{"ok": false, "kind": exception type, "error": one line}`` (the worker stays up);
- frames never go through the pipe: ``configure`` names two ``multiprocessing.shared_memory``
  blocks created by the client, RGB ``[H, W, 3]`` uint8 and depth ``[H, W]`` float32 metres, and
  every request that renders (``set_state``, ``step``, ``observe``) writes them before replying.

The habitat-sim calls follow its own sources (v0.2.4 to v0.3.x): ``Simulator.step`` returns the
sensor observations plus ``"collided"`` (there is no ``previous_step_collided`` on
``habitat_sim.Simulator``; that is habitat-lab's wrapper), colour observations are RGBA uint8
``[H, W, 4]`` views of a buffer that the next render overwrites, ``CameraSensorSpec.resolution``
is ``[H, W]``, ``AgentState.rotation`` is a numpy-quaternion (set as ``[x, y, z, w]`` coefficients,
converted by ``Agent.set_state``), geodesics come from ``PathFinder.find_path(ShortestPath())``
(``geodesic_distance`` is inf without a path) and the expert is
``habitat_sim.nav.GreedyGeodesicFollower``, which answers ``stop_key`` once the geodesic distance is
strictly below ``goal_radius``.
"""

import argparse
import base64
import json
import logging
import math
import os
import select
import struct
import sys
import time
from multiprocessing import resource_tracker, shared_memory
from typing import Any, Optional

import numpy as np

PROTOCOL_VERSION = 1
_HEADER = struct.Struct(">I")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
EXIT_NO_HABITAT = 3

# the action space keys, named after habitat-sim's registered controls (GreedyGeodesicFollower
# finds its actions by these names)
ACTION_KEYS = ("move_forward", "turn_left", "turn_right")
DEFAULT_SCENE_PATH_PREFIX = "data/scene_datasets/"  # VLN-CE strips it from scene ids

log = logging.getLogger("habitat_worker")


class ProtocolError(RuntimeError):
    """The other end closed the pipe or sent something that is not a message."""


# ---- framing (shared with the client, sim_bridge.habitat_backend) -----------------------------


def write_message(fd: int, message: dict[str, Any]) -> None:
    """Send ``message`` as a length-prefixed JSON document."""
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, size: int, deadline: Optional[float]) -> bytes:
    chunks = []
    left = size
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError("no message within the deadline")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise ProtocolError(f"pipe closed after {size - left} of {size} bytes")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, deadline: Optional[float] = None) -> dict[str, Any]:
    """One message; TimeoutError past ``deadline`` (time.monotonic), ProtocolError on EOF."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"announced message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        message = json.loads(_read_exact(fd, size, deadline).decode("utf-8"))
    except ValueError as exc:
        raise ProtocolError(f"not a JSON message: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a JSON object, got {type(message).__name__}")
    return message


def strip_scene_prefix(scene_id: str) -> str:
    """``scene_id`` without VLN-CE's ``data/scene_datasets/`` prefix (VLN-CE strips it too)."""
    if scene_id.startswith(DEFAULT_SCENE_PATH_PREFIX):
        return scene_id[len(DEFAULT_SCENE_PATH_PREFIX):]
    return scene_id


# ---- the worker -------------------------------------------------------------------------------


def _vec3(value: Any, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: expected 3 finite numbers, got {value!r}")
    return arr


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach to the client's block without letting this process's tracker unlink it at exit."""
    shm = shared_memory.SharedMemory(name=name)
    try:  # Python < 3.13 registers attached blocks too (bpo-39959); the client owns this one
        resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001
    except Exception:  # noqa: BLE001 - a tracker that does not know the block is fine
        pass
    return shm


class HabitatWorker:
    """One habitat_sim.Simulator, one agent with an RGB and a depth camera, and its expert."""

    def __init__(self, habitat_sim: Any):
        self.hs = habitat_sim
        self.sim = None  # habitat_sim.Simulator
        self.scene_path: Optional[str] = None
        self.follower = None
        self.settings: dict[str, Any] = {}
        self.blocks: list[shared_memory.SharedMemory] = []
        self.rgb: Optional[np.ndarray] = None
        self.depth: Optional[np.ndarray] = None

    # -- requests --

    def configure(self, args: dict[str, Any]) -> dict[str, Any]:
        """Keep the agent/sensor settings, attach the frame blocks; next load_scene uses them."""
        self.settings = dict(args)
        height, width = int(args["height"]), int(args["width"])
        self._release_blocks()
        rgb_block, depth_block = _attach(args["rgb_shm"]), _attach(args["depth_shm"])
        self.blocks = [rgb_block, depth_block]
        self.rgb = np.ndarray((height, width, 3), np.uint8, buffer=rgb_block.buf)
        self.depth = np.ndarray((height, width), np.float32, buffer=depth_block.buf)
        self.scene_path = None  # the next load_scene builds the new configuration
        return {}

    def _configuration(self, scene_path: str) -> Any:
        hs, s = self.hs, self.settings
        sim_cfg = hs.SimulatorConfiguration()
        sim_cfg.scene_id = scene_path
        sim_cfg.gpu_device_id = int(s["gpu_device_id"])
        sim_cfg.allow_sliding = bool(s["allow_sliding"])
        sim_cfg.random_seed = int(s["seed"])
        sim_cfg.enable_physics = False
        sensors = []
        for uuid, sensor_type in (("rgb", hs.SensorType.COLOR), ("depth", hs.SensorType.DEPTH)):
            spec = hs.CameraSensorSpec()
            spec.uuid = uuid
            spec.sensor_type = sensor_type
            spec.sensor_subtype = hs.SensorSubType.PINHOLE
            spec.resolution = [int(s["height"]), int(s["width"])]  # [H, W]
            spec.position = [0.0, float(s["camera_height"]), 0.0]
            spec.hfov = float(s["hfov_deg"])
            sensors.append(spec)
        agent = hs.AgentConfiguration()
        agent.height = float(s["agent_height"])
        agent.radius = float(s["agent_radius"])
        agent.sensor_specifications = sensors
        amounts = {"move_forward": float(s["forward_step"]), "turn_left": float(s["turn_angle"]),
                   "turn_right": float(s["turn_angle"])}
        agent.action_space = {key: hs.ActionSpec(key, hs.ActuationSpec(amount=amount))
                              for key, amount in amounts.items()}
        return hs.Configuration(sim_cfg, [agent])

    def load_scene(self, args: dict[str, Any]) -> dict[str, Any]:
        """Open ``path`` (or keep it open); make sure the navmesh fits the agent; new expert."""
        if not self.settings:
            raise RuntimeError("load_scene before configure")
        path = str(args["path"])
        if not os.path.isfile(path):
            raise ValueError(f"scene file {path} does not exist")
        navmesh_mode = str(args.get("navmesh", "auto"))
        if navmesh_mode not in ("auto", "recompute"):
            raise ValueError(f"navmesh must be 'auto' or 'recompute', got {navmesh_mode!r}")
        how = "kept"
        if self.sim is None or path != self.scene_path or navmesh_mode == "recompute":
            conf = self._configuration(path)
            if self.sim is None:
                self.sim = self.hs.Simulator(conf)
            else:  # as habitat-lab does on a new scene: free the old one, then reconfigure
                self.sim.close(destroy=False)
                self.sim.reconfigure(conf)
            self.scene_path = path
            how = self._ensure_navmesh(path, navmesh_mode)
            self.sim.pathfinder.seed(int(self.settings["seed"]))
        self.follower = self.hs.nav.GreedyGeodesicFollower(
            self.sim.pathfinder, self.sim.get_agent(0),
            goal_radius=float(self.settings["expert_stop_radius"]), stop_key=None,
            forward_key="move_forward", left_key="turn_left", right_key="turn_right")
        lower, upper = self.sim.pathfinder.get_bounds()
        return {"navmesh": how, "bounds": [[float(v) for v in lower], [float(v) for v in upper]]}

    def _ensure_navmesh(self, scene_path: str, mode: str) -> str:
        pathfinder = self.sim.pathfinder
        if mode == "auto" and pathfinder.is_loaded:
            return "loaded"  # habitat-sim found (or, 0.2.4, computed) it while loading the scene
        navmesh = os.path.splitext(scene_path)[0] + ".navmesh"
        if mode == "auto" and os.path.isfile(navmesh) and pathfinder.load_nav_mesh(navmesh):
            return "loaded"
        settings = self.hs.NavMeshSettings()
        settings.set_defaults()
        settings.agent_height = float(self.settings["agent_height"])
        settings.agent_radius = float(self.settings["agent_radius"])
        if not self.sim.recompute_navmesh(pathfinder, settings) or not pathfinder.is_loaded:
            raise RuntimeError(f"could not compute a navmesh for {scene_path}")
        log.info("computed a navmesh for %s (agent height %.2f, radius %.2f)", scene_path,
                 settings.agent_height, settings.agent_radius)
        return "computed"

    def _require_scene(self) -> None:
        if self.sim is None:
            raise RuntimeError("no scene loaded (load_scene first)")

    def _pose(self, collided: bool = False) -> dict[str, Any]:
        state = self.sim.get_agent(0).get_state()
        coeffs = self.hs.utils.common.quat_to_coeffs(state.rotation)  # [x, y, z, w]
        return {"position": [float(v) for v in state.position],
                "rotation": [float(v) for v in coeffs], "collided": bool(collided)}

    def _write_frames(self, observations: dict[str, Any]) -> None:
        self.rgb[...] = np.asarray(observations["rgb"])[..., :3]  # RGBA -> RGB
        np.clip(np.asarray(observations["depth"], dtype=np.float32),
                float(self.settings["depth_min"]), float(self.settings["depth_max"]),
                out=self.depth)

    def set_state(self, args: dict[str, Any]) -> dict[str, Any]:
        """Place the agent (``position``, ``rotation`` [x, y, z, w]) and render."""
        self._require_scene()
        rotation = np.asarray(args["rotation"], dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(rotation)) if rotation.size == 4 else 0.0
        if not (norm > 0 and math.isfinite(norm)):
            raise ValueError(f"rotation: expected a quaternion [x, y, z, w], got {rotation!r}")
        state = self.hs.AgentState()
        state.position = _vec3(args["position"], "position")
        state.rotation = [float(v) for v in rotation / norm]  # Agent.set_state converts coeffs
        self.sim.get_agent(0).set_state(state, reset_sensors=True)
        self.follower.reset()
        self._write_frames(self.sim.get_sensor_observations())
        return self._pose()

    def step(self, args: dict[str, Any]) -> dict[str, Any]:
        """One action by its key; ``collided`` comes from the step's observations."""
        self._require_scene()
        key = args["action"]
        if key not in ACTION_KEYS:
            raise ValueError(f"action {key!r} is not one of {list(ACTION_KEYS)}")
        observations = self.sim.step(key)
        self._write_frames(observations)
        return self._pose(collided=bool(observations["collided"]))

    def observe(self, args: dict[str, Any]) -> dict[str, Any]:
        """Render at the current pose."""
        self._require_scene()
        self._write_frames(self.sim.get_sensor_observations())
        return self._pose()

    def geodesic_distance(self, args: dict[str, Any]) -> dict[str, Any]:
        """Navmesh shortest-path length from ``a`` to ``b`` (inf when there is none)."""
        self._require_scene()
        path = self.hs.ShortestPath()
        path.requested_start = _vec3(args["a"], "a")
        path.requested_end = _vec3(args["b"], "b")
        found = self.sim.pathfinder.find_path(path)
        distance = float(path.geodesic_distance) if found else math.inf
        return {"distance": distance if math.isfinite(distance) else None}

    def is_navigable(self, args: dict[str, Any]) -> dict[str, Any]:
        """PathFinder.is_navigable at ``point``."""
        self._require_scene()
        return {"navigable": bool(self.sim.pathfinder.is_navigable(_vec3(args["point"], "point")))}

    def snap_point(self, args: dict[str, Any]) -> dict[str, Any]:
        """The closest navmesh point to ``point`` (None when there is none: NaN from habitat)."""
        self._require_scene()
        snapped = np.array(self.sim.pathfinder.snap_point(_vec3(args["point"], "point")), float)
        return {"point": [float(v) for v in snapped] if np.all(np.isfinite(snapped)) else None}

    def sample_point(self, args: dict[str, Any]) -> dict[str, Any]:
        """A random navigable point; ``seed`` reseeds the pathfinder first when given."""
        self._require_scene()
        if args.get("seed") is not None:
            self.sim.pathfinder.seed(int(args["seed"]))
        point = np.array(self.sim.pathfinder.get_random_navigable_point(), float)
        return {"point": [float(v) for v in point]}

    def expert_action(self, args: dict[str, Any]) -> dict[str, Any]:
        """GreedyGeodesicFollower's next key towards ``goal`` (None: stop; ``error``: no path)."""
        self._require_scene()
        goal = _vec3(args["goal"], "goal")
        try:
            key = self.follower.next_action_along(goal)
        except self.hs.errors.GreedyFollowerError as exc:
            return {"action": None, "error": f"no path to the goal ({exc or 'ERROR'})"}
        return {"action": key, "error": None}

    def top_down(self, args: dict[str, Any]) -> dict[str, Any]:
        """PathFinder.get_topdown_view at ``height``, bit-packed, with the navmesh bounds."""
        self._require_scene()
        view = np.asarray(self.sim.pathfinder.get_topdown_view(
            float(args["meters_per_pixel"]), float(args["height"])), dtype=bool)
        lower, _ = self.sim.pathfinder.get_bounds()
        return {"shape": list(view.shape), "lower": [float(v) for v in lower],
                "bits": base64.b64encode(np.packbits(view).tobytes()).decode("ascii")}

    # -- life --

    def _release_blocks(self) -> None:
        self.rgb = self.depth = None
        for block in self.blocks:
            block.close()
        self.blocks = []

    def close(self) -> None:
        """Close the simulator and detach the frame blocks."""
        if self.sim is not None:
            self.sim.close()
            self.sim = None
        self._release_blocks()


OPS = ("configure", "load_scene", "set_state", "step", "observe", "geodesic_distance",
       "is_navigable", "snap_point", "sample_point", "expert_action", "top_down")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def serve(worker: HabitatWorker, read_fd: int, write_fd: int) -> None:
    """Answer requests until ``close`` or until the client closes its end."""
    while True:
        try:
            request = read_message(read_fd)
        except ProtocolError:
            log.info("client went away; exiting")
            return
        op = request.get("op")
        if op == "close":
            write_message(write_fd, {"ok": True, "result": {}})
            return
        if op not in OPS:
            write_message(write_fd, {"ok": False, "kind": "ValueError",
                                     "error": f"unknown op {op!r}"})
            continue
        try:
            result = getattr(worker, op)(request.get("args") or {})
        except Exception as exc:  # noqa: BLE001 - report it to the client and keep serving
            log.exception("%s failed", op)
            reply = {"ok": False, "kind": type(exc).__name__, "error": _one_line(exc)}
        else:
            reply = {"ok": True, "result": result}
        write_message(write_fd, reply)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: import habitat_sim, say hello, serve; exit status 3 without habitat_sim."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    args = parser.parse_args(argv)
    # the protocol has its own pipes; C++ code that prints to stdout joins the log on stderr
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s habitat_worker %(levelname)s: %(message)s")
    hello = {"hello": PROTOCOL_VERSION, "python": sys.version.split()[0], "pid": os.getpid()}
    try:
        import habitat_sim
        import habitat_sim.errors  # noqa: F401 - GreedyFollowerError
        import habitat_sim.utils.common  # noqa: F401 - quat_to_coeffs
    except Exception as exc:  # noqa: BLE001 - ImportError, or a library that fails to load
        hello["error"] = f"cannot import habitat_sim ({type(exc).__name__}: {_one_line(exc)})"
        write_message(args.write_fd, hello)
        return EXIT_NO_HABITAT
    hello["habitat_sim"] = str(getattr(habitat_sim, "__version__", "unknown"))
    write_message(args.write_fd, hello)
    worker = HabitatWorker(habitat_sim)
    try:
        serve(worker, args.read_fd, args.write_fd)
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
