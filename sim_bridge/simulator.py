"""The simulator interface every backend implements (no ROS, no habitat import here).

A :class:`Simulator` is reset to a VLN-CE :class:`~sim_bridge.episodes.Episode`, stepped with
:class:`janus_core.actions.Action` s and observed as :class:`SimObservation` (RGB, metric depth,
pose, collision flag). It also answers the questions evaluation and training ask: geodesic
distances, navigability, the shortest-path expert's next action, and a top-down map.

This module knows no backend: each one (``embedded`` in :mod:`sim_bridge.embedded`, ``habitat``
in :mod:`sim_bridge.habitat_backend`) implements :class:`Simulator`, and the registry in
:mod:`sim_bridge.backends` builds the one :class:`SimConfig` names (``make_simulator``).

Conventions (habitat's): world coordinates in metres, y up, floor at y = 0; the agent looks
along -z at yaw 0; yaw is the rotation about +y, counter-clockwise seen from above, so TURN_LEFT
increases it; quaternions are ``[x, y, z, w]``.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from janus_core.actions import Action
from janus_core.interface import Observation

if TYPE_CHECKING:
    from sim_bridge.episodes import Episode

log = logging.getLogger(__name__)

FURNITURE = ("auto", "shapes", "sweethome3d")
NAVMESH_MODES = ("auto", "recompute")


class BackendUnavailableError(RuntimeError):
    """The backend cannot run at all (not installed, its worker cannot start or restart).

    An evaluation stops on it with this one-line message, keeping its finished episodes; an
    error of a single episode is any other exception.
    """


@dataclasses.dataclass
class SimConfig:
    """How to build a simulator. Defaults are VLN-CE's R2R-CE agent and JanusVLN's camera.

    - ``backend``: a name registered in :mod:`sim_bridge.backends` (``embedded`` | ``habitat``)
      or ``auto``; the registry checks it when it builds the simulator.
    - ``width`` x ``height``, ``hfov_deg``: the RGB and depth sensors (JanusVLN: 640x480, 79).
    - ``camera_height``: sensor height above the floor in metres (VLN-CE: 1.25).
    - ``agent_height`` / ``agent_radius``: the agent cylinder (VLN-CE: 1.5 / 0.1 m).
    - ``forward_step`` (m) / ``turn_angle`` (degrees): the discrete actions (0.25 / 15; the
      JanusVLN paper also reports 30-degree turns).
    - ``depth_min`` / ``depth_max``: depth is clipped to this range in metres (habitat's depth
      sensor, ``normalize_depth`` off).
    - ``scenes_dir``: root for relative scene paths (habitat ``.glb``; embedded ``.json``).
    - ``allow_sliding``: a blocked forward step slides along the obstacle (habitat default).
    - ``seed``: seeds the backend's random state (habitat-sim, ``sample_navigable_point``).
    - ``expert_stop_radius``: the expert answers STOP once the geodesic distance to the goal is
      below this (metres; strictly, as habitat-sim's GreedyGeodesicFollower compares). 0.25 m =
      one forward step: it ends next to the goal, far inside VLN-CE's 3 m success distance, the
      way habitat's follower ends its reference paths.
    - ``expert_heading_tolerance``: the embedded expert turns only while its heading error is
      above this (degrees); 0 means half a turn (7.5 degrees at 15-degree turns: the shortest
      path, but the labels zig-zag left-forward-right). Training data uses 15: one turn of
      dead-band, cleaner labels, the same success (``config/recipe_small.yaml``).
    - ``success_distance``: VLN-CE success threshold in metres (3.0), for drivers and metrics.
    - ``render``: False runs the embedded backend blind (empty images, no OpenGL needed) for
      expert data, episode generation and tests.
    - ``grid_cell``: embedded occupancy grid cell size in metres.
    - ``furniture``: embedded furniture look: ``shapes`` (procedural), ``sweethome3d`` (Debian's
      sweethome3d-furniture models; error if missing) or ``auto`` (models when installed).
    - ``gpu_device_id``: habitat-sim's GPU.
    - ``habitat_python``: the interpreter that runs the habitat worker (one with habitat-sim,
      e.g. a conda env's ``bin/python``); None: ``$JANUS_HABITAT_PYTHON``, else this Python.
    - ``habitat_timeout_s``: seconds the habitat worker may take for one step or query before it
      is declared hung and stopped; ``habitat_load_timeout_s``: for its start and a scene load.
    - ``habitat_navmesh``: ``auto`` (the scene's ``.navmesh`` when habitat-sim finds one, else
      one computed for this agent) or ``recompute`` (always computed from the scene mesh).
    """

    backend: str = "embedded"
    width: int = 640
    height: int = 480
    hfov_deg: float = 79.0
    camera_height: float = 1.25
    agent_height: float = 1.5
    agent_radius: float = 0.1
    forward_step: float = 0.25
    turn_angle: float = 15.0
    depth_min: float = 0.0
    depth_max: float = 10.0
    scenes_dir: str = "data/scene_datasets"
    allow_sliding: bool = True
    seed: int = 0
    expert_stop_radius: float = 0.25
    expert_heading_tolerance: float = 0.0
    success_distance: float = 3.0
    render: bool = True
    grid_cell: float = 0.05
    furniture: str = "auto"
    gpu_device_id: int = 0
    habitat_python: str | None = None
    habitat_timeout_s: float = 60.0
    habitat_load_timeout_s: float = 600.0
    habitat_navmesh: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str) or not self.backend:
            raise ValueError(f"SimConfig.backend: expected a backend name, got {self.backend!r}")
        if self.furniture not in FURNITURE:
            raise ValueError(f"SimConfig.furniture: {self.furniture!r} is not one of "
                             f"{list(FURNITURE)}")
        for name in ("width", "height"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"SimConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.hfov_deg < 180.0:
            raise ValueError(f"SimConfig.hfov_deg must be in (0, 180) degrees, got {self.hfov_deg}")
        if self.habitat_navmesh not in NAVMESH_MODES:
            raise ValueError(f"SimConfig.habitat_navmesh: {self.habitat_navmesh!r} is not one of "
                             f"{list(NAVMESH_MODES)}")
        positive = ("camera_height", "agent_height", "forward_step", "turn_angle",
                    "expert_stop_radius", "success_distance", "grid_cell", "habitat_timeout_s",
                    "habitat_load_timeout_s")
        for name in positive:
            if not float(getattr(self, name)) > 0.0:
                raise ValueError(f"SimConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.expert_heading_tolerance < 90.0:
            raise ValueError("SimConfig.expert_heading_tolerance must be in [0, 90) degrees, got "
                             f"{self.expert_heading_tolerance}")
        if self.agent_radius < 0:
            raise ValueError(f"SimConfig.agent_radius must be >= 0, got {self.agent_radius}")
        if not 0.0 <= self.depth_min < self.depth_max:
            raise ValueError(f"SimConfig: need 0 <= depth_min < depth_max, got {self.depth_min}, "
                             f"{self.depth_max}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SimConfig:
        """Build from a (YAML) mapping; unknown keys raise ValueError listing the known ones."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"SimConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SimObservation:
    """What the agent senses after a reset or step.

    ``rgb`` (H, W, 3) uint8; ``depth`` (H, W) float32 metres (view-space z, clipped to the
    config's range); both are empty (0 x 0) when rendering is off. ``position`` (3,) is the
    agent's base on the floor (habitat frame), ``yaw`` radians, ``collided`` whether the last
    step was cut short by an obstacle.
    """

    rgb: np.ndarray
    depth: np.ndarray
    position: np.ndarray
    yaw: float
    collided: bool = False

    @property
    def rotation(self) -> list[float]:
        """The heading as a quaternion [x, y, z, w]."""
        return yaw_to_quaternion(self.yaw)

    def to_observation(self, stamp: float = 0.0) -> Observation:
        """The policy's :class:`janus_core.interface.Observation` (pose = x, y, z, yaw)."""
        x, y, z = (float(v) for v in self.position)
        return Observation(rgb=self.rgb, depth=self.depth, pose=(x, y, z, float(self.yaw)),
                           stamp=stamp)


@dataclasses.dataclass
class TopDownMap:
    """A top-down image of a scene and its world <-> pixel transform.

    ``image`` (H, W, 3) uint8: the occupancy drawing; ``navigable`` (H, W) bool. Pixel (row, col)
    covers world x in ``origin[0] + col * meters_per_pixel`` (+1 pixel) and z in
    ``origin[1] + row * meters_per_pixel``: rows grow with z, columns with x (north = -z is up).
    """

    image: np.ndarray
    navigable: np.ndarray
    meters_per_pixel: float
    origin: tuple[float, float]

    def to_pixel(self, points) -> np.ndarray:
        """(N, 2) integer [row, col] of world points given as (N, 3) xyz or (N, 2) xz."""
        p = np.atleast_2d(np.asarray(points, dtype=float))
        x, z = (p[:, 0], p[:, 2]) if p.shape[1] == 3 else (p[:, 0], p[:, 1])
        col = np.floor((x - self.origin[0]) / self.meters_per_pixel)
        row = np.floor((z - self.origin[1]) / self.meters_per_pixel)
        return np.stack([row, col], 1).astype(np.int64)

    def to_world(self, pixels) -> np.ndarray:
        """(N, 2) world [x, z] of pixel centres given as (N, 2) [row, col]."""
        rc = np.atleast_2d(np.asarray(pixels, dtype=float))
        x = self.origin[0] + (rc[:, 1] + 0.5) * self.meters_per_pixel
        z = self.origin[1] + (rc[:, 0] + 0.5) * self.meters_per_pixel
        return np.stack([x, z], 1)

    def draw(self, path=None, agent: tuple[Any, float] | None = None, goal=None, scale: int = 2,
             path_color=(30, 110, 220), reference=None) -> np.ndarray:
        """The map with an optional path, reference path, goal and agent (position, yaw) drawn.

        ``scale`` enlarges the image (nearest neighbour) before drawing. Returns RGB uint8.
        """
        from PIL import Image, ImageDraw

        img = Image.fromarray(self.image).resize(
            (self.image.shape[1] * scale, self.image.shape[0] * scale), Image.NEAREST)
        dr = ImageDraw.Draw(img)

        def pix(points):
            rc = self.to_pixel(points)
            return [(float((c + 0.5) * scale), float((r + 0.5) * scale)) for r, c in rc]

        width = max(2, scale)
        if reference is not None and len(reference) > 1:
            dr.line(pix(reference), fill=(120, 190, 120), width=width)
        if path is not None and len(path) > 1:
            dr.line(pix(path), fill=tuple(path_color), width=width)
        if goal is not None:
            (gx, gy), = pix([goal])
            r = 4 * scale
            dr.ellipse([gx - r, gy - r, gx + r, gy + r], fill=(220, 40, 40), outline=(0, 0, 0))
        if agent is not None:
            (ax, ay), = pix([agent[0]])
            yaw = float(agent[1])
            fx, fz = -math.sin(yaw), -math.cos(yaw)  # forward in (x, z) = (col, row) directions
            r = 5 * scale
            px, pz = -fz, fx  # perpendicular
            tip = (ax + fx * r * 1.6, ay + fz * r * 1.6)
            left = (ax - fx * r * 0.6 + px * r * 0.8, ay - fz * r * 0.6 + pz * r * 0.8)
            right = (ax - fx * r * 0.6 - px * r * 0.8, ay - fz * r * 0.6 - pz * r * 0.8)
            dr.polygon([tip, left, right], fill=(250, 170, 20), outline=(0, 0, 0))
        return np.asarray(img)


def yaw_to_quaternion(yaw: float) -> list[float]:
    """[x, y, z, w] of a rotation by ``yaw`` about +y."""
    return [0.0, math.sin(yaw / 2), 0.0, math.cos(yaw / 2)]


def quaternion_to_yaw(q) -> float:
    """The heading (rotation about +y) of a quaternion [x, y, z, w], in (-pi, pi].

    Uses where the quaternion sends the camera's forward axis (-z), so a quaternion with a
    small roll or pitch still gives the heading it faces.
    """
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 0 or not math.isfinite(n):
        raise ValueError(f"rotation {list(q)!r} is not a valid quaternion [x, y, z, w]")
    x, y, z, w = x / n, y / n, z / n, w / n
    # R @ (0, 0, -1) = -(third column of R)
    fx = -(2 * (x * z + w * y))
    fz = -(1 - 2 * (x * x + y * y))
    if abs(fx) < 1e-12 and abs(fz) < 1e-12:
        raise ValueError(f"rotation {list(q)!r} points the camera straight up or down")
    return math.atan2(-fx, -fz)


def check_point(value, n: int, what: str) -> np.ndarray:
    """``value`` as a float array of ``n`` finite numbers; ValueError naming ``what`` otherwise."""
    try:
        arr = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected {n} numbers, got {value!r}") from None
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: expected {n} finite numbers, got {value!r}")
    return arr


@dataclasses.dataclass
class EpisodeStart:
    """An episode's checked start pose and goal (:func:`check_episode_start`)."""

    label: str  # "<file>: episode <id>": the prefix of every error about the episode
    position: np.ndarray  # (3,)
    rotation: np.ndarray  # (4,) [x, y, z, w]
    yaw: float
    goal: np.ndarray  # (3,)


def check_episode_start(episode: Any) -> EpisodeStart:
    """Check the fields every backend's ``reset`` needs; ValueError naming file, episode, field."""
    from sim_bridge.episodes import episode_label

    label = episode_label(episode)
    start = check_point(episode.start_position, 3, f"{label}: field start_position")
    rot = check_point(episode.start_rotation, 4, f"{label}: field start_rotation")
    if not episode.goals:
        raise ValueError(f"{label}: field goals is empty")
    goal = check_point(episode.goals[0].position, 3, f"{label}: field goals[0].position")
    try:
        yaw = quaternion_to_yaw(rot)
    except ValueError as exc:
        raise ValueError(f"{label}: field start_rotation: {exc}") from None
    return EpisodeStart(label, start, rot, yaw, goal)


class Simulator(abc.ABC):
    """A VLN-CE simulator: one agent, discrete actions, RGB-D observations.

    Call :meth:`reset` with an episode before anything else; then :meth:`step` once per action.
    """

    config: SimConfig

    @abc.abstractmethod
    def reset(self, episode: Episode) -> SimObservation:
        """Load the episode's scene, place the agent at its start; return the first observation."""

    @abc.abstractmethod
    def step(self, action: Action | int) -> SimObservation:
        """Execute one action (STOP does not move the agent) and observe."""

    @abc.abstractmethod
    def observe(self) -> SimObservation:
        """The observation at the current pose (no action)."""

    @property
    @abc.abstractmethod
    def position(self) -> np.ndarray:
        """The agent's (x, y, z) on the floor."""

    @property
    @abc.abstractmethod
    def yaw(self) -> float:
        """The agent's heading in radians."""

    @property
    def rotation(self) -> list[float]:
        """The agent's heading as a quaternion [x, y, z, w]."""
        return yaw_to_quaternion(self.yaw)

    @property
    @abc.abstractmethod
    def episode(self) -> Episode | None:
        """The current episode (None before the first reset)."""

    @abc.abstractmethod
    def set_agent_state(self, position, yaw: float) -> SimObservation:
        """Teleport the agent (ValueError if ``position`` is not navigable) and observe."""

    @abc.abstractmethod
    def geodesic_distance(self, a, b) -> float:
        """Shortest-path distance in metres from point ``a`` to ``b``; ``inf`` if unreachable."""

    def distance_to_goal(self) -> float:
        """Geodesic distance from the agent to the current episode's (first) goal."""
        if self.episode is None:
            raise RuntimeError("distance_to_goal: call reset(episode) first")
        return self.geodesic_distance(self.position, self.episode.goals[0].position)

    @abc.abstractmethod
    def is_navigable(self, point) -> bool:
        """Whether the agent can stand at ``point`` (x, y, z)."""

    @abc.abstractmethod
    def sample_navigable_point(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """A random navigable (x, y, z) in the current scene."""

    @abc.abstractmethod
    def expert_action(self, goal=None) -> Action:
        """The shortest-path next action towards ``goal`` (default: the episode goal).

        STOP once closer than ``config.expert_stop_radius`` (geodesic) to it.
        """

    @abc.abstractmethod
    def top_down_map(self) -> TopDownMap:
        """A top-down occupancy map of the current scene with its world <-> pixel transform."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources."""

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
