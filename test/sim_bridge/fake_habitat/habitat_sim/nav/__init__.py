"""MOCK habitat_sim.nav: PathFinder, ShortestPath, NavMeshSettings, GreedyGeodesicFollower.

The navmesh is the MOCK world's free space (see the package docstring): the room shrunk by the
agent radius minus the wall grown by it. Geodesics are exact shortest paths around the wall.
"""

import enum
import heapq
import math
import os

import numpy as np

from habitat_sim import errors
from habitat_sim.utils.common import quat_to_coeffs

__all__ = ["GreedyFollowerCodes", "GreedyGeodesicFollower", "NavMeshSettings", "PathFinder",
           "ShortestPath"]

ROOM = 5.0  # the room is x, z in [-ROOM, ROOM]
WALL_END = 1.0  # the wall runs along z = 0 from x = -ROOM to WALL_END
WALL_HALF = 0.05  # half its thickness


class NavMeshSettings:
    """pybind class: only these attributes exist."""

    __slots__ = ("cell_size", "cell_height", "agent_height", "agent_radius", "agent_max_climb",
                 "agent_max_slope", "region_min_size", "region_merge_size", "edge_max_len",
                 "edge_max_error", "verts_per_poly", "detail_sample_dist",
                 "detail_sample_max_error", "filter_low_hanging_obstacles", "filter_ledge_spans",
                 "filter_walkable_low_height_spans")

    def __init__(self):
        self.set_defaults()

    def set_defaults(self):
        """The values of habitat-sim's NavMeshSettings::setDefaults."""
        self.cell_size, self.cell_height = 0.05, 0.2
        self.agent_height, self.agent_radius = 1.5, 0.1
        self.agent_max_climb, self.agent_max_slope = 0.2, 45.0
        self.region_min_size = self.region_merge_size = 20
        self.edge_max_len, self.edge_max_error = 12.0, 1.3
        self.verts_per_poly, self.detail_sample_dist, self.detail_sample_max_error = 6.0, 6.0, 1.0
        self.filter_low_hanging_obstacles = True
        self.filter_ledge_spans = True
        self.filter_walkable_low_height_spans = True

    def __eq__(self, other):
        return isinstance(other, NavMeshSettings) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)


class ShortestPath:
    __slots__ = ("requested_start", "requested_end", "points", "geodesic_distance")

    def __init__(self):
        self.requested_start = np.zeros(3, np.float32)
        self.requested_end = np.zeros(3, np.float32)
        self.points = []
        self.geodesic_distance = 0.0


def _vec3(value):
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape != (3,):
        raise TypeError(f"expected a 3-vector, got {value!r}")
    return arr


def _seg_hits_box(a, b, box):
    """Whether segment a-b (x, z) passes through the open box (x0, z0, x1, z1)."""
    x0, z0, x1, z1 = box
    t0, t1 = 0.0, 1.0
    d = (b[0] - a[0], b[1] - a[1])
    for p, q in ((-d[0], a[0] - x0), (d[0], x1 - a[0]), (-d[1], a[1] - z0), (d[1], z1 - a[1])):
        if abs(p) < 1e-12:
            if q <= 0:
                return False
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
    return t1 - t0 > 1e-9


class PathFinder:
    def __init__(self):
        self._loaded = False
        self._settings = NavMeshSettings()
        self._rng = np.random.default_rng(0)

    # -- the MOCK world's free space --

    def _wall(self, grow=0.0):
        r = self._settings.agent_radius + grow
        return (-ROOM - 1.0, -WALL_HALF - r, WALL_END + r, WALL_HALF + r)

    def _free(self, x, z):
        r = self._settings.agent_radius
        x0, z0, x1, z1 = self._wall()
        in_room = -ROOM + r <= x <= ROOM - r and -ROOM + r <= z <= ROOM - r
        return in_room and not (x0 < x < x1 and z0 < z < z1)

    def _route(self, a, b):
        """Shortest (x, z) polyline from a to b around the wall (grown by 1 mm), or None."""
        box = self._wall(1e-3)
        corners = [(box[2], box[1]), (box[2], box[3])]
        nodes = [a, b] + corners
        dist = {0: 0.0}
        prev = {}
        heap = [(0.0, 0)]
        while heap:
            d, i = heapq.heappop(heap)
            if i == 1:
                path = [1]
                while path[-1] != 0:
                    path.append(prev[path[-1]])
                return [nodes[k] for k in reversed(path)], d
            if d > dist.get(i, math.inf):
                continue
            for j in range(len(nodes)):
                if j == i or _seg_hits_box(nodes[i], nodes[j], self._wall()):
                    continue
                nd = d + math.dist(nodes[i], nodes[j])
                if nd < dist.get(j, math.inf):
                    dist[j], prev[j] = nd, i
                    heapq.heappush(heap, (nd, j))
        return None

    # -- habitat-sim's API --

    @property
    def is_loaded(self):
        return self._loaded

    @property
    def nav_mesh_settings(self):
        return self._settings

    def load_nav_mesh(self, path):
        if not os.path.isfile(path):
            return False
        self._loaded = True
        return True

    def seed(self, new_seed):
        self._rng = np.random.default_rng(int(new_seed))

    def get_bounds(self):
        r = self._settings.agent_radius
        return (np.array([-ROOM + r, 0.0, -ROOM + r], np.float32),
                np.array([ROOM - r, 0.0, ROOM - r], np.float32))

    def is_navigable(self, pt, max_y_delta=0.5):
        p = _vec3(pt)
        return self._loaded and abs(float(p[1])) <= max_y_delta and self._free(p[0], p[2])

    def get_random_navigable_point(self, max_tries=10, island_index=-1):
        while True:
            x, z = self._rng.uniform(-ROOM, ROOM, 2)
            if self._free(x, z):
                return np.array([x, 0.0, z], np.float32)

    def snap_point(self, point, island_index=-1):
        p = _vec3(point)
        if not self._loaded:
            return np.full(3, np.nan, np.float32)
        r = self._settings.agent_radius
        x = float(np.clip(p[0], -ROOM + r, ROOM - r))
        z = float(np.clip(p[2], -ROOM + r, ROOM - r))
        if not self._free(x, z):
            x0, z0, x1, z1 = self._wall()
            options = [(x1, z), (x, z0), (x, z1)]
            x, z = min(options, key=lambda o: math.hypot(o[0] - p[0], o[1] - p[2]))
        return np.array([x, 0.0, z], np.float32)

    def find_path(self, path):
        a, b = _vec3(path.requested_start), _vec3(path.requested_end)
        route = None
        if self.is_navigable(a) and self.is_navigable(b):
            route = self._route((float(a[0]), float(a[2])), (float(b[0]), float(b[2])))
        if route is None:
            path.points, path.geodesic_distance = [], math.inf
            return False
        points, distance = route
        path.points = [np.array([x, 0.0, z], np.float32) for x, z in points]
        path.geodesic_distance = float(distance)
        return True

    def try_step(self, start, end):
        """Slide: keep each axis of the move that stays free."""
        s, e = _vec3(start), _vec3(end)
        if self._free(e[0], e[2]):
            return e
        for cand in ((e[0], s[2]), (s[0], e[2])):
            if self._free(*cand):
                return np.array([cand[0], s[1], cand[1]], np.float32)
        return s.copy()

    def try_step_no_sliding(self, start, end):
        """Stop at the last free point along the move."""
        s, e = _vec3(start), _vec3(end)
        if self._free(e[0], e[2]):
            return e
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            p = s + mid * (e - s)
            lo, hi = (mid, hi) if self._free(p[0], p[2]) else (lo, mid)
        return (s + lo * (e - s)).astype(np.float32)

    def get_topdown_view(self, meters_per_pixel, height, eps=0.5):
        lower, upper = self.get_bounds()
        cols = int(math.ceil((upper[0] - lower[0]) / meters_per_pixel))
        rows = int(math.ceil((upper[2] - lower[2]) / meters_per_pixel))
        xs = lower[0] + (np.arange(cols) + 0.5) * meters_per_pixel
        zs = lower[2] + (np.arange(rows) + 0.5) * meters_per_pixel
        return np.array([[self._free(x, z) for x in xs] for z in zs], dtype=bool)


class GreedyFollowerCodes(enum.Enum):
    ERROR = 0
    STOP = 1
    FORWARD = 2
    LEFT = 3
    RIGHT = 4


class GreedyGeodesicFollower:
    """Greedy over the MOCK geodesic; STOP when the distance is strictly below goal_radius."""

    def __init__(self, pathfinder, agent, goal_radius=None, *, stop_key=None, forward_key=None,
                 left_key=None, right_key=None, fix_thrashing=True, thrashing_threshold=16):
        self.pathfinder = pathfinder
        self.agent = agent
        self.last_goal = None
        self.action_mapping = {GreedyFollowerCodes.STOP: stop_key}
        specs = {}
        for code, name, key in ((GreedyFollowerCodes.FORWARD, "move_forward", forward_key),
                                (GreedyFollowerCodes.LEFT, "turn_left", left_key),
                                (GreedyFollowerCodes.RIGHT, "turn_right", right_key)):
            found = [(k, v) for k, v in agent.agent_config.action_space.items() if v.name == name]
            assert len(found) == 1, f"Could not find an action spec corresponding to {name}"
            self.action_mapping[code] = found[0][0] if key is None else key
            specs[name] = found[0][1].actuation
        self.forward_amount = float(specs["move_forward"].amount)
        self.turn = math.radians(float(specs["turn_left"].amount))
        self.goal_radius = 0.75 * self.forward_amount if goal_radius is None else goal_radius

    def _code(self, goal):
        state = self.agent.state
        path = ShortestPath()
        path.requested_start, path.requested_end = state.position, _vec3(goal)
        if not self.pathfinder.find_path(path):
            return GreedyFollowerCodes.ERROR
        if path.geodesic_distance < self.goal_radius:
            return GreedyFollowerCodes.STOP
        target = path.points[1]
        x, y, z, w = quat_to_coeffs(state.rotation)
        yaw = 2.0 * math.atan2(y, w)
        want = math.atan2(-(target[0] - state.position[0]), -(target[2] - state.position[2]))
        error = (want - yaw + math.pi) % (2 * math.pi) - math.pi
        if abs(error) > self.turn / 2 + 1e-6:
            return GreedyFollowerCodes.LEFT if error > 0 else GreedyFollowerCodes.RIGHT
        return GreedyFollowerCodes.FORWARD

    def next_action_along(self, goal_pos):
        if self.last_goal is None or not np.allclose(goal_pos, self.last_goal):
            self.reset()
            self.last_goal = goal_pos
        code = self._code(goal_pos)
        if code == GreedyFollowerCodes.ERROR:
            raise errors.GreedyFollowerError()
        return self.action_mapping[code]

    def reset(self):
        self.last_goal = None
