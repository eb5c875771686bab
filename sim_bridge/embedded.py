"""The embedded VLN-CE simulator: procedural apartments, moderngl rendering, grid geodesics.

:class:`EmbeddedSimulator` ties :mod:`sim_bridge.scene` (what the apartment is),
:mod:`sim_bridge.renderer` (what the camera sees) and :mod:`sim_bridge.navgrid` (where the agent
can go, geodesics, the expert) behind the :class:`~sim_bridge.simulator.Simulator` interface.
It needs numpy, scipy, scikit-fmm and, unless ``render=False``, moderngl with EGL.

Motion follows VLN-CE: MOVE_FORWARD moves 0.25 m (``forward_step``) with collision against walls
and furniture and, with ``allow_sliding``, sliding along them; TURN_LEFT / TURN_RIGHT turn by
``turn_angle`` degrees; STOP does not move. Positions stay on the floor (y = 0).
"""

from __future__ import annotations

import collections
import logging
import math

import numpy as np

from janus_core.actions import Action
from sim_bridge.episodes import episode_label
from sim_bridge.furniture import SweetHome3DCatalog
from sim_bridge.navgrid import NavGrid, ShortestPathExpert, forward_vector, wrap_angle
from sim_bridge.scene import SceneSpec, is_embedded_scene_id, load_scene
from sim_bridge.simulator import (
    SimConfig,
    SimObservation,
    Simulator,
    TopDownMap,
    check_episode_start,
    check_point,
)

log = logging.getLogger(__name__)


class EmbeddedSimulator(Simulator):
    """The default backend; see the module docstring. Scenes are cached (a few at a time)."""

    def __init__(self, cfg: SimConfig | None = None, scene_cache: int = 4):
        self.config = cfg or SimConfig()
        if self.config.backend not in ("embedded", "auto"):
            raise ValueError(f"EmbeddedSimulator got SimConfig.backend={self.config.backend!r}; "
                             "use make_simulator() to pick the backend")
        self._catalog: SweetHome3DCatalog | None = None
        if self.config.render and self.config.furniture != "shapes":
            catalog = SweetHome3DCatalog()
            if catalog.available:
                self._catalog = catalog
            elif self.config.furniture == "sweethome3d":
                raise ValueError(
                    f"SimConfig.furniture='sweethome3d' but {catalog.path} does not exist: "
                    "apt-get install sweethome3d-furniture, or use furniture='shapes'")
        self._renderer = None
        self._scenes: collections.OrderedDict[str, tuple[SceneSpec, NavGrid]] = (
            collections.OrderedDict())
        self._scene_cache = scene_cache
        self._scene: SceneSpec | None = None
        self._grid: NavGrid | None = None
        self._expert: ShortestPathExpert | None = None
        self._episode = None
        self._position = np.zeros(3)
        self._yaw = 0.0
        self._collided = False
        self._last: SimObservation | None = None
        self._rng = np.random.default_rng(self.config.seed)
        self.steps = 0

    # ---- scenes ----------------------------------------------------------------------------

    def load_scene(self, scene: str | SceneSpec) -> SceneSpec:
        """Make ``scene`` (an id such as ``embedded:apt_00042``, or a spec) the current scene."""
        if isinstance(scene, SceneSpec):
            spec, key = scene, f"{scene.scene_id}#{id(scene)}"
        else:
            spec, key = None, scene
        if key in self._scenes:
            self._scenes.move_to_end(key)
            spec, grid = self._scenes[key]
        else:
            if spec is None:
                spec = load_scene(scene, self.config.scenes_dir)
            grid = NavGrid(spec, agent_radius=self.config.agent_radius,
                           agent_height=self.config.agent_height, cell_size=self.config.grid_cell)
            self._scenes[key] = (spec, grid)
            if len(self._scenes) > self._scene_cache:
                self._scenes.popitem(last=False)
        if spec is not self._scene:
            self._scene, self._grid = spec, grid
            self._expert = ShortestPathExpert(
                grid, forward_step=self.config.forward_step, turn_angle_deg=self.config.turn_angle,
                stop_radius=self.config.expert_stop_radius, allow_sliding=self.config.allow_sliding,
                heading_tolerance_deg=self.config.expert_heading_tolerance or None)
            if self.config.render:
                if self._renderer is None:
                    from sim_bridge.renderer import Renderer

                    self._renderer = Renderer(self.config.width, self.config.height,
                                              self.config.hfov_deg)
                self._renderer.load_scene(spec, self._catalog)
        return spec

    @property
    def scene(self) -> SceneSpec:
        """The current scene (RuntimeError before the first reset / load_scene)."""
        if self._scene is None:
            raise RuntimeError("no scene loaded: call reset(episode) or load_scene(scene_id)")
        return self._scene

    @property
    def navgrid(self) -> NavGrid:
        """The current scene's navigation grid."""
        self.scene  # noqa: B018 - raises when no scene is loaded
        assert self._grid is not None
        return self._grid

    @property
    def expert(self) -> ShortestPathExpert:
        """The current scene's shortest-path expert."""
        self.scene  # noqa: B018
        assert self._expert is not None
        return self._expert

    # ---- episodes --------------------------------------------------------------------------

    def reset(self, episode) -> SimObservation:
        """Load the episode's scene and put the agent at its start (validated; see below).

        ValueError naming the episode file (when the episode was read from one), the episode id
        and the field for: a scene id that is not embedded or does not load, a malformed start
        position / rotation / goal, a start that is not navigable (inside a wall or furniture,
        too close to one, off the floor, outside the apartment), a goal more than 1 m from any
        navigable point.
        """
        sid = getattr(episode, "scene_id", None)
        if not isinstance(sid, str) or not is_embedded_scene_id(sid):
            raise ValueError(
                f"{episode_label(episode)}: field scene_id {sid!r} is not an embedded scene "
                f"(expected 'embedded:apt_<seed>' or a SceneSpec .json); habitat scenes need "
                f"backend='habitat'")
        checked = check_episode_start(episode)
        eid, start, goal, yaw = checked.label, checked.position, checked.goal, checked.yaw
        try:
            self.load_scene(sid)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{eid}: field scene_id {sid!r}: {exc}") from None
        grid = self.navgrid
        why = self._not_navigable_reason(start)
        if why:
            raise ValueError(f"{eid}: field start_position {start.tolist()} is not "
                             f"navigable in scene {sid}: {why}")
        if grid.snap(goal, max_distance=1.0) is None:
            raise ValueError(f"{eid}: field goals[0].position {goal.tolist()} is more "
                             f"than 1 m from any navigable point of scene {sid}")
        self._episode = episode
        self._position = np.array([start[0], 0.0, start[2]])
        self._yaw = wrap_angle(yaw)
        self._collided = False
        self.steps = 0
        self.expert.reset()
        self._last = None
        return self.observe()

    def _not_navigable_reason(self, p: np.ndarray) -> str:
        grid = self.navgrid
        if abs(p[1]) > grid.max_y_delta:
            return f"y = {p[1]:.3f} is not on the floor (|y| must be <= {grid.max_y_delta})"
        bx0, bz0, bx1, bz1 = grid.bounds
        if not (bx0 < p[0] < bx1 and bz0 < p[2] < bz1):
            return f"outside the apartment (x in {bx0}..{bx1}, z in {bz0}..{bz1})"
        clearance = float(grid.signed_distance(np.array([[p[0], p[2]]]))[0])
        # 1 um of slack: the grid marks cells navigable from float32 clearances, so a cell centre
        # at exactly the agent radius (0.1 in float32 >= 0.1) must not be refused here
        if clearance < grid.radius - 1e-6:
            where = "inside a wall or furniture" if clearance <= 0 else "too close to a wall or " \
                "furniture"
            return (f"{where} (clearance {clearance:.3f} m < agent radius {grid.radius} m)")
        return ""

    @property
    def episode(self):
        """The current episode (None before the first reset)."""
        return self._episode

    def _require_episode(self, what: str) -> None:
        if self._episode is None:
            raise RuntimeError(f"{what}: call reset(episode) first")

    # ---- acting ----------------------------------------------------------------------------

    def step(self, action: Action | int) -> SimObservation:
        """Execute ``action``; see the module docstring for the motion model."""
        self._require_episode("step")
        try:
            action = Action(int(action))
        except (TypeError, ValueError):
            raise ValueError(f"step: {action!r} is not an action; expected one of "
                             f"{[f'{a.name}={int(a)}' for a in Action]}") from None
        collided = False
        if action == Action.MOVE_FORWARD:
            delta = self.config.forward_step * forward_vector(self._yaw)
            self._position, collided = self.navgrid.try_step(self._position, delta,
                                                             self.config.allow_sliding)
        elif action == Action.TURN_LEFT:
            self._yaw = wrap_angle(self._yaw + math.radians(self.config.turn_angle))
        elif action == Action.TURN_RIGHT:
            self._yaw = wrap_angle(self._yaw - math.radians(self.config.turn_angle))
        self._collided = bool(collided)
        self.steps += 1
        if action == Action.STOP and self._last is not None:
            self._last = SimObservation(self._last.rgb, self._last.depth, self._last.position,
                                        self._last.yaw, False)
            return self._last
        self._last = None
        return self.observe()

    def observe(self) -> SimObservation:
        """The observation at the current pose (rendered once per pose)."""
        self._require_episode("observe")
        if self._last is None:
            rgb, depth = self._render(self._position, self._yaw)
            self._last = SimObservation(rgb, depth, self._position.copy(), self._yaw,
                                        self._collided)
        return self._last

    def _render(self, position: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        if not self.config.render or self._renderer is None:
            return np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.float32)
        eye = (position[0], position[1] + self.config.camera_height, position[2])
        rgb, depth = self._renderer.render(eye, yaw)
        np.clip(depth, self.config.depth_min, self.config.depth_max, out=depth)
        return rgb, depth

    def render_at(self, position, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        """RGB and depth seen from ``position`` (agent base) at ``yaw``, without moving."""
        self.scene  # noqa: B018
        p = check_point(position, 3, "render_at: position")
        return self._render(p, float(yaw))

    def set_agent_state(self, position, yaw: float) -> SimObservation:
        """Teleport the agent to a navigable ``position`` facing ``yaw``; observe."""
        self._require_episode("set_agent_state")
        p = check_point(position, 3, "set_agent_state: position")
        why = self._not_navigable_reason(p)
        if why:
            raise ValueError(f"set_agent_state: position {p.tolist()} is not navigable: {why}")
        self._position = np.array([p[0], 0.0, p[2]])
        self._yaw = wrap_angle(float(yaw))
        self._collided = False
        self._last = None
        return self.observe()

    @property
    def position(self) -> np.ndarray:
        """The agent's (x, y, z)."""
        return self._position.copy()

    @property
    def yaw(self) -> float:
        """The agent's heading (radians, (-pi, pi])."""
        return self._yaw

    # ---- navigation queries ----------------------------------------------------------------

    def geodesic_distance(self, a, b) -> float:
        """Shortest-path distance (metres) from ``a`` to ``b`` in the current scene; inf if none."""
        pa = check_point(a, 3, "geodesic_distance: a")
        pb = check_point(b, 3, "geodesic_distance: b")
        return self.navgrid.geodesic_distance(pa, pb)

    def is_navigable(self, point) -> bool:
        """Whether the agent can stand at ``point`` in the current scene."""
        return self.navgrid.is_navigable(point)

    def sample_navigable_point(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """A random navigable cell centre on the scene's largest island.

        Without ``rng`` the simulator's own generator (seeded by ``config.seed``) is used.
        """
        return self.navgrid.sample_navigable_point(self._rng if rng is None else rng)

    def expert_action(self, goal=None) -> Action:
        """The expert's next action from the current pose (see :class:`ShortestPathExpert`)."""
        self._require_episode("expert_action")
        target = self._episode.goals[0].position if goal is None else goal
        target = check_point(target, 3, "expert_action: goal")
        return self.expert.next_action(self._position, self._yaw, target)

    def shortest_path(self, a, b) -> np.ndarray:
        """The geodesic path from ``a`` to ``b`` as (K, 3) points (empty if unreachable)."""
        return self.navgrid.shortest_path(check_point(a, 3, "shortest_path: a"),
                                          check_point(b, 3, "shortest_path: b"))

    def top_down_map(self) -> TopDownMap:
        """The current scene's occupancy map, one pixel per grid cell."""
        return self.navgrid.top_down_map()

    def close(self) -> None:
        """Release the OpenGL context."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
