"""The habitat-sim backend: the same Simulator interface on real VLN-CE scenes (MP3D .glb).

habitat-sim is imported lazily, inside :class:`HabitatSimulator`, so this module imports
anywhere; choosing the backend without habitat-sim raises :class:`HabitatUnavailableError` saying
how to install it (conda, headless build). The agent is configured as in VLN-CE: 0.25 m forward
steps and 15-degree turns (both from :class:`~sim_bridge.simulator.SimConfig`), an agent cylinder
of height 1.5 m and radius 0.1 m, and RGB + depth pinhole sensors of ``width`` x ``height`` with
``hfov_deg`` mounted ``camera_height`` above the floor. Geodesics come from the scene's navmesh
(``habitat_sim.ShortestPath``); the expert is ``habitat_sim.nav.GreedyGeodesicFollower``.

Written for habitat-sim 0.2.x / 0.3.x (conda, Python 3.9 / 3.10): keep this module free of
Python 3.11-only syntax.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from janus_core.actions import Action
from sim_bridge.simulator import (
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

INSTALL_HINT = (
    "habitat-sim is not installed in this Python environment. It is distributed through conda, "
    "not PyPI. For a headless machine (no display, EGL rendering on an NVIDIA GPU):\n"
    "    conda create -n habitat python=3.9 cmake=3.14.0\n"
    "    conda activate habitat\n"
    "    conda install habitat-sim headless -c conda-forge -c aihabitat\n"
    "then install this package into that environment. Without habitat-sim, use "
    "SimConfig(backend='embedded') (the default), which runs anywhere."
)

_ACTION_KEYS = {Action.MOVE_FORWARD: "move_forward", Action.TURN_LEFT: "turn_left",
                Action.TURN_RIGHT: "turn_right"}
_KEY_ACTIONS = {v: k for k, v in _ACTION_KEYS.items()}


class HabitatUnavailableError(ImportError):
    """habitat-sim cannot be imported; the message says how to install it."""


def import_habitat_sim():
    """``import habitat_sim``, or HabitatUnavailableError with the install instructions."""
    try:
        import habitat_sim
    except ImportError as exc:
        raise HabitatUnavailableError(f"{INSTALL_HINT}\n(import error: {exc})") from exc
    return habitat_sim


class HabitatSimulator(Simulator):
    """VLN-CE on habitat-sim. Scenes: ``episode.scene_id`` joined with ``config.scenes_dir``."""

    def __init__(self, cfg: SimConfig | None = None):
        self.config = cfg or SimConfig(backend="habitat")
        self._hs = import_habitat_sim()
        self._sim = None
        self._scene_path: Path | None = None
        self._episode = None
        self._follower = None
        self._collided = False
        self._last: SimObservation | None = None

    # ---- configuration ---------------------------------------------------------------------

    def resolve_scene(self, scene_id: str) -> Path:
        """The scene file for ``scene_id`` (relative ids live under ``config.scenes_dir``)."""
        path = Path(scene_id)
        if not path.is_absolute():
            path = Path(self.config.scenes_dir) / path
        return path

    def make_configuration(self, scene_path: str | Path):
        """The ``habitat_sim.Configuration`` for one scene, agent and sensors as in VLN-CE."""
        hs = self._hs
        cfg = self.config
        sim_cfg = hs.SimulatorConfiguration()
        sim_cfg.scene_id = str(scene_path)
        sim_cfg.gpu_device_id = int(cfg.gpu_device_id)
        sim_cfg.allow_sliding = bool(cfg.allow_sliding)
        sim_cfg.random_seed = int(cfg.seed)
        sim_cfg.enable_physics = False
        sensors = []
        for uuid, sensor_type in (("rgb", hs.SensorType.COLOR), ("depth", hs.SensorType.DEPTH)):
            spec = hs.CameraSensorSpec()
            spec.uuid = uuid
            spec.sensor_type = sensor_type
            spec.sensor_subtype = hs.SensorSubType.PINHOLE
            spec.resolution = [int(cfg.height), int(cfg.width)]
            spec.position = [0.0, float(cfg.camera_height), 0.0]
            spec.hfov = float(cfg.hfov_deg)
            sensors.append(spec)
        agent = hs.agent.AgentConfiguration()
        agent.height = float(cfg.agent_height)
        agent.radius = float(cfg.agent_radius)
        agent.sensor_specifications = sensors
        agent.action_space = {
            "move_forward": hs.agent.ActionSpec(
                "move_forward", hs.agent.ActuationSpec(amount=float(cfg.forward_step))),
            "turn_left": hs.agent.ActionSpec(
                "turn_left", hs.agent.ActuationSpec(amount=float(cfg.turn_angle))),
            "turn_right": hs.agent.ActionSpec(
                "turn_right", hs.agent.ActuationSpec(amount=float(cfg.turn_angle))),
        }
        return hs.Configuration(sim_cfg, [agent])

    def load_scene(self, scene_id: str) -> Path:
        """Open (or switch to) the scene; load its navmesh or build one for this agent."""
        path = self.resolve_scene(scene_id)
        if not path.is_file():
            raise ValueError(f"habitat scene {scene_id!r} not found at {path} (set "
                             f"SimConfig.scenes_dir to your scene_datasets directory)")
        if self._sim is not None and path == self._scene_path:
            return path
        conf = self.make_configuration(path)
        if self._sim is None:
            self._sim = self._hs.Simulator(conf)
        else:
            self._sim.reconfigure(conf)
        self._scene_path = path
        pathfinder = self._sim.pathfinder
        if not pathfinder.is_loaded:
            navmesh = path.with_suffix(".navmesh")
            if navmesh.is_file():
                pathfinder.load_nav_mesh(str(navmesh))
            else:
                log.info("no navmesh next to %s: computing one for the agent", path)
                settings = self._hs.NavMeshSettings()
                settings.set_defaults()
                settings.agent_height = float(self.config.agent_height)
                settings.agent_radius = float(self.config.agent_radius)
                self._sim.recompute_navmesh(pathfinder, settings)
        pathfinder.seed(int(self.config.seed))
        self._follower = self._hs.nav.GreedyGeodesicFollower(
            pathfinder, self._sim.get_agent(0), goal_radius=float(self.config.expert_stop_radius),
            stop_key=None, forward_key="move_forward", left_key="turn_left",
            right_key="turn_right")
        return path

    def _require(self, what: str) -> None:
        if self._sim is None or self._episode is None:
            raise RuntimeError(f"{what}: call reset(episode) first")

    # ---- episodes --------------------------------------------------------------------------

    def reset(self, episode) -> SimObservation:
        """Load the scene and place the agent at the episode start (ValueError on bad fields)."""
        checked = check_episode_start(episode)
        eid, start, rot = checked.label, checked.position, checked.rotation
        try:
            self.load_scene(episode.scene_id)
        except ValueError as exc:
            raise ValueError(f"{eid}: field scene_id: {exc}") from None
        if not self._sim.pathfinder.is_navigable(start.astype(np.float32)):
            raise ValueError(f"{eid}: field start_position {start.tolist()} is not on "
                             f"the navmesh of {episode.scene_id}")
        self._episode = episode
        self._set_state(start, rot)
        return self.observe()

    def _set_state(self, position: np.ndarray, rotation_xyzw) -> None:
        hs = self._hs
        state = hs.AgentState()
        state.position = np.asarray(position, dtype=np.float32)
        state.rotation = hs.utils.common.quat_from_coeffs(np.asarray(rotation_xyzw, float))
        self._sim.get_agent(0).set_state(state, reset_sensors=True)
        self._follower.reset()
        self._collided = False
        self._last = None

    @property
    def episode(self):
        """The current episode (None before the first reset)."""
        return self._episode

    # ---- acting ----------------------------------------------------------------------------

    def step(self, action: Action | int) -> SimObservation:
        """Execute one action on habitat-sim (STOP only re-observes)."""
        self._require("step")
        try:
            action = Action(int(action))
        except (TypeError, ValueError):
            raise ValueError(f"step: {action!r} is not an action; expected one of "
                             f"{[f'{a.name}={int(a)}' for a in Action]}") from None
        if action == Action.STOP:
            self._collided = False
            self._last = None
            return self.observe()
        raw = self._sim.step(_ACTION_KEYS[action])
        self._collided = bool(self._sim.previous_step_collided)
        self._last = self._to_observation(raw)
        return self._last

    def observe(self) -> SimObservation:
        """The sensors at the current pose."""
        self._require("observe")
        if self._last is None:
            self._last = self._to_observation(self._sim.get_sensor_observations())
        return self._last

    def _to_observation(self, raw: dict) -> SimObservation:
        rgb = np.ascontiguousarray(np.asarray(raw["rgb"])[..., :3], dtype=np.uint8)
        depth = np.asarray(raw["depth"], dtype=np.float32).reshape(rgb.shape[:2])
        depth = np.clip(depth, self.config.depth_min, self.config.depth_max)
        return SimObservation(rgb, depth, self.position, self.yaw, self._collided)

    def set_agent_state(self, position, yaw: float) -> SimObservation:
        """Teleport onto the navmesh (ValueError off it) facing ``yaw``."""
        self._require("set_agent_state")
        p = check_point(position, 3, "set_agent_state: position")
        if not self._sim.pathfinder.is_navigable(p.astype(np.float32)):
            raise ValueError(f"set_agent_state: position {p.tolist()} is not on the navmesh")
        self._set_state(p, yaw_to_quaternion(float(yaw)))
        return self.observe()

    @property
    def position(self) -> np.ndarray:
        """The agent's (x, y, z)."""
        return np.asarray(self._sim.get_agent(0).get_state().position, dtype=float).copy()

    @property
    def yaw(self) -> float:
        """The agent's heading (radians)."""
        q = self._sim.get_agent(0).get_state().rotation
        return quaternion_to_yaw([q.x, q.y, q.z, q.w])

    # ---- navigation queries ----------------------------------------------------------------

    def geodesic_distance(self, a, b) -> float:
        """Navmesh shortest-path distance from ``a`` to ``b`` (inf if there is no path)."""
        if self._sim is None:
            raise RuntimeError("geodesic_distance: call reset(episode) first")
        path = self._hs.ShortestPath()
        path.requested_start = check_point(a, 3, "geodesic_distance: a").astype(np.float32)
        path.requested_end = check_point(b, 3, "geodesic_distance: b").astype(np.float32)
        if not self._sim.pathfinder.find_path(path):
            return math.inf
        return float(path.geodesic_distance)

    def is_navigable(self, point) -> bool:
        """Whether ``point`` is on the navmesh."""
        if self._sim is None:
            raise RuntimeError("is_navigable: call reset(episode) first")
        return bool(self._sim.pathfinder.is_navigable(
            check_point(point, 3, "is_navigable: point").astype(np.float32)))

    def sample_navigable_point(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """A random navmesh point (the pathfinder is seeded from ``rng`` when given)."""
        if self._sim is None:
            raise RuntimeError("sample_navigable_point: call reset(episode) first")
        if rng is not None:
            self._sim.pathfinder.seed(int(rng.integers(2**31 - 1)))
        return np.asarray(self._sim.pathfinder.get_random_navigable_point(), dtype=float)

    def expert_action(self, goal=None) -> Action:
        """GreedyGeodesicFollower's next action (STOP within the stop radius or without path)."""
        self._require("expert_action")
        target = self._episode.goals[0].position if goal is None else goal
        target = check_point(target, 3, "expert_action: goal").astype(np.float32)
        try:
            key = self._follower.next_action_along(target)
        except self._hs.errors.GreedyFollowerError as exc:
            log.warning("expert: no path to %s (%s); answering STOP", target.tolist(), exc)
            return Action.STOP
        if key is None:
            return Action.STOP
        return _KEY_ACTIONS[key]

    def top_down_map(self, meters_per_pixel: float = 0.05) -> TopDownMap:
        """The navmesh at the agent's floor height, navigable white, the rest grey."""
        self._require("top_down_map")
        pathfinder = self._sim.pathfinder
        navigable = np.asarray(pathfinder.get_topdown_view(meters_per_pixel,
                                                           float(self.position[1])), dtype=bool)
        lower, _ = pathfinder.get_bounds()
        image = np.where(navigable[..., None], np.uint8(248), np.uint8(190)).repeat(3, axis=2)
        return TopDownMap(image=image.astype(np.uint8), navigable=navigable,
                          meters_per_pixel=meters_per_pixel,
                          origin=(float(lower[0]), float(lower[2])))

    def close(self) -> None:
        """Close habitat-sim."""
        if self._sim is not None:
            self._sim.close()
            self._sim = None
