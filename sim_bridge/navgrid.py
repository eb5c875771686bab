"""Navigation on a 2-D occupancy grid: navigability, geodesics, VLN-CE motion and the expert.

:class:`NavGrid` rasterises a :class:`~sim_bridge.scene.SceneSpec` into cells of ``cell_size``
metres (0.05 by default). A cell is navigable when it lies inside the apartment and its centre
is at least the agent radius away from every wall and piece of furniture (the exact signed
distance to the footprints, so obstacles are dilated by the radius exactly, not by whole cells).

* **Geodesics** (:meth:`NavGrid.geodesic_distance`, :class:`GeodesicField`): fast marching
  (scikit-fmm, second order) from the goal over the navigable cells, cached per goal. Unreachable
  points get ``inf``. A point between cell centres is interpolated bilinearly.
* **Shortest paths** (:meth:`NavGrid.shortest_path`): gradient descent on the geodesic field with
  sub-cell steps (:meth:`GeodesicField.trace`), points pushed out to the agent radius, then
  string-pulled (:meth:`NavGrid.string_pull`: straight segments wherever the agent disc fits), so
  the path is taut: its length is within a grid cell of the true shortest path. Fast marching on
  the cell grid overestimates that true length a little (first order next to obstacles, corners
  rounded at the cell centres; halving the cell halves it): measured on 383 pairs (1-15 m) in 20
  generated apartments the path is 0.26 m at most, and never more than one cell + 1.8 % of the
  geodesic, shorter than ``geodesic_distance``, and never more than 5 mm longer.
* **Motion** (:meth:`NavGrid.try_step`): the agent is a disc; a forward step moves until contact
  and, with sliding on, continues along the obstacle's tangent for the rest of the step (what
  habitat-sim's navmesh sliding does), reporting a collision whenever the step was cut short.
* **Expert** (:class:`ShortestPathExpert`): the next action along the shortest path. It aims at
  a "carrot" - the farthest point of the geodesic path within ``lookahead`` metres that is in
  straight-line sight - turns while the heading error is more than half a turn, and moves forward
  only when a simulated step actually shortens the geodesic. When forward makes no progress it
  commits to one turning direction at that position, so it can neither oscillate nor get stuck
  on a corner: every forward step lowers the geodesic distance by at least ``min_progress``.
"""

from __future__ import annotations

import collections
import logging
import math

import numpy as np

from janus_core.actions import Action
from sim_bridge.scene import Footprints, SceneSpec, footprints_of

log = logging.getLogger(__name__)

_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]

#: How far (metres) a shortest-path segment may come inside the agent radius: a straight chord
#: around an obstacle's rounded (radius-dilated) corner sags by chord^2 / (8 r), so an exact
#: radius would need ever more vertices; 2 mm lets a 90-degree corner take about four.
PATH_SLACK = 0.002


def forward_vector(yaw: float) -> np.ndarray:
    """Unit (x, z) direction the agent faces at ``yaw`` (yaw 0 looks along -z)."""
    return np.array([-math.sin(yaw), -math.cos(yaw)])


def heading_to(dx: float, dz: float) -> float:
    """The yaw that faces the (x, z) direction (dx, dz)."""
    return math.atan2(-dx, -dz)


def wrap_angle(a: float) -> float:
    """``a`` wrapped to (-pi, pi]."""
    a = math.fmod(a + math.pi, 2 * math.pi)
    if a <= 0:
        a += 2 * math.pi
    return a - math.pi


class GeodesicField:
    """Geodesic distance (metres) from every grid cell to one goal; ``inf`` where unreachable."""

    def __init__(self, grid: NavGrid, goal: np.ndarray, distances: np.ndarray):
        self.grid = grid
        self.goal = goal  # (x, y, z): the goal used (snapped to a navigable cell if needed)
        self.distances = distances
        self._gradient: tuple[np.ndarray, np.ndarray] | None = None

    def value_at(self, point) -> float:
        """Geodesic distance from ``point`` ((x, y, z) or (x, z)) to the goal."""
        g = self.grid
        x, z = _xz(point)
        near = math.hypot(x - self.goal[0], z - self.goal[2])
        if near <= 2 * g.cell and np.isfinite(self.distances).any():
            # next to the goal the straight line is the path (no obstacle is this thin)
            return near
        fx = (x - g.x0) / g.cell - 0.5
        fz = (z - g.z0) / g.cell - 0.5
        j0, i0 = int(math.floor(fx)), int(math.floor(fz))
        d = self.distances
        if 0 <= i0 and i0 + 1 < d.shape[0] and 0 <= j0 and j0 + 1 < d.shape[1]:
            quad = d[i0:i0 + 2, j0:j0 + 2]
            if np.all(np.isfinite(quad)):
                tx, tz = fx - j0, fz - i0
                top = quad[0, 0] * (1 - tx) + quad[0, 1] * tx
                bottom = quad[1, 0] * (1 - tx) + quad[1, 1] * tx
                return float(top * (1 - tz) + bottom * tz)
        # near an obstacle: the best path through a reachable cell close by
        best = math.inf
        ci, cj = int(round(fz)), int(round(fx))
        for radius in (1, 2, 4, 8):
            lo_i, hi_i = max(ci - radius, 0), min(ci + radius + 1, d.shape[0])
            lo_j, hi_j = max(cj - radius, 0), min(cj + radius + 1, d.shape[1])
            if lo_i >= hi_i or lo_j >= hi_j:
                break
            block = d[lo_i:hi_i, lo_j:hi_j]
            finite = np.isfinite(block)
            if finite.any():
                ii, jj = np.nonzero(finite)
                cx = g.x0 + (jj + lo_j + 0.5) * g.cell
                cz = g.z0 + (ii + lo_i + 0.5) * g.cell
                best = float(np.min(block[finite] + np.hypot(cx - x, cz - z)))
                break
        return best

    def descend(self, point, max_length: float = math.inf) -> np.ndarray:
        """The shortest path from ``point`` towards the goal as (K, 2) (x, z) points.

        Steepest descent over the 8-neighbour cells, starting at the point itself; it ends at the
        goal (included) or once ``max_length`` metres of path are collected.
        """
        g = self.grid
        d = self.distances
        x, z = _xz(point)
        start = g.cell_of(x, z)
        if not g.in_grid(*start) or not np.isfinite(d[start]):
            start = self._nearest_finite(start)
            if start is None:
                return np.array([[x, z]])
        pts = [(x, z)]
        length = 0.0
        i, j = start
        cx, cz = g.cell_center(i, j)
        length += math.hypot(cx - x, cz - z)
        pts.append((cx, cz))
        gx, gz = self.goal[0], self.goal[2]
        while length < max_length:
            here = d[i, j]
            best, nxt = here, None
            for di, dj in _NEIGHBOURS:
                a, b = i + di, j + dj
                if 0 <= a < d.shape[0] and 0 <= b < d.shape[1] and d[a, b] < best:
                    best, nxt = d[a, b], (a, b)
            if nxt is None:  # the goal cell (a local minimum of the field)
                length += math.hypot(gx - pts[-1][0], gz - pts[-1][1])
                pts.append((gx, gz))
                break
            i, j = nxt
            cx, cz = g.cell_center(i, j)
            length += math.hypot(cx - pts[-1][0], cz - pts[-1][1])
            pts.append((cx, cz))
        return np.array(pts)

    def gradient(self) -> tuple[np.ndarray, np.ndarray]:
        """(d/dx, d/dz) of the field per cell (per metre); 0 where the cell is unreachable.

        Central differences; one-sided next to an unreachable neighbour; 0 along an axis where
        both neighbours are unreachable.
        """
        if self._gradient is None:
            d = self.distances
            finite = np.isfinite(d)
            v = np.where(finite, d, 0.0).astype(np.float64)
            out = []
            for axis in (1, 0):  # columns are x, rows are z
                n = d.shape[axis]
                lo = [slice(None)] * 2
                hi = [slice(None)] * 2
                lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
                lo, hi = tuple(lo), tuple(hi)
                diff = np.zeros_like(v)
                pair = np.zeros_like(finite)
                diff[lo] = v[hi] - v[lo]
                pair[lo] = finite[hi] & finite[lo]
                fwd, f_ok = diff, pair  # cell k -> k + 1
                bwd = np.zeros_like(v)
                b_ok = np.zeros_like(finite)
                bwd[hi], b_ok[hi] = diff[lo], pair[lo]  # cell k - 1 -> k
                g = np.where(f_ok & b_ok, 0.5 * (fwd + bwd),
                             np.where(f_ok, fwd, np.where(b_ok, bwd, 0.0)))
                out.append(np.where(finite, g / self.grid.cell, 0.0))
            self._gradient = (out[0], out[1])
        return self._gradient

    def trace(self, point, step: float | None = None) -> np.ndarray:
        """The path of steepest descent from ``point`` to the goal as (K, 2) (x, z) points.

        Unlike :meth:`descend` (whose 8-neighbour moves quantise the heading to 45 degrees and
        so wander up to several cells off the geodesic) this follows the bilinearly interpolated
        field gradient in steps of ``step`` metres (half a cell by default). Where the gradient
        does not lower the field (next to obstacles, on a ridge) it takes one 8-neighbour step.
        Ends at the goal (included).
        """
        g = self.grid
        d = self.distances
        finite = np.isfinite(d)
        h = 0.5 * g.cell if step is None else float(step)
        gx_, gz_ = self.gradient()
        x, z = _xz(point)
        goal_x, goal_z = float(self.goal[0]), float(self.goal[2])
        pts = [(x, z)]
        v = self.value_at((x, z))
        if not math.isfinite(v):
            return np.array(pts)
        max_steps = int(4 * v / h) + 4 * sum(d.shape)
        for _ in range(max_steps):
            if math.hypot(x - goal_x, z - goal_z) <= 2 * g.cell:
                break
            nxt = self._gradient_step(x, z, v, h, gx_, gz_, finite)
            if nxt is None:
                nxt = self._cell_step(x, z)
                if nxt is None:  # the goal cell: a local minimum of the field
                    break
            x, z = nxt
            v = self.value_at((x, z))
            pts.append((x, z))
        else:  # did not converge (never seen): finish with the cell descent
            return np.concatenate([np.array(pts), self.descend((x, z))[1:]])
        pts.append((goal_x, goal_z))
        return np.array(pts)

    def _gradient_step(self, x: float, z: float, v: float, h: float, gx_: np.ndarray,
                       gz_: np.ndarray, finite: np.ndarray) -> tuple[float, float] | None:
        g = self.grid
        fx = (x - g.x0) / g.cell - 0.5
        fz = (z - g.z0) / g.cell - 0.5
        j0, i0 = int(math.floor(fx)), int(math.floor(fz))
        tx, tz = fx - j0, fz - i0
        wx = wz = 0.0
        for di, dj, w in ((0, 0, (1 - tx) * (1 - tz)), (0, 1, tx * (1 - tz)),
                          (1, 0, (1 - tx) * tz), (1, 1, tx * tz)):
            i, j = i0 + di, j0 + dj
            if w > 0 and 0 <= i < finite.shape[0] and 0 <= j < finite.shape[1] and finite[i, j]:
                wx += w * gx_[i, j]
                wz += w * gz_[i, j]
        norm = math.hypot(wx, wz)
        if norm < 1e-9:
            return None
        nx, nz = x - h * wx / norm, z - h * wz / norm
        cell = g.cell_of(nx, nz)
        if not g.in_grid(*cell) or not finite[cell]:
            return None
        if self.value_at((nx, nz)) >= v - 0.2 * h:
            return None
        return nx, nz

    def _cell_step(self, x: float, z: float) -> tuple[float, float] | None:
        """The centre of the lowest 8-neighbour of the cell holding (x, z) (None at a minimum)."""
        g = self.grid
        d = self.distances
        i, j = g.cell_of(x, z)
        if not g.in_grid(i, j) or not np.isfinite(d[i, j]):
            cell = self._nearest_finite((i, j))
            return None if cell is None else g.cell_center(*cell)
        best, nxt = d[i, j], None
        for di, dj in _NEIGHBOURS:
            a, b = i + di, j + dj
            if 0 <= a < d.shape[0] and 0 <= b < d.shape[1] and d[a, b] < best:
                best, nxt = d[a, b], (a, b)
        return None if nxt is None else g.cell_center(*nxt)

    def _nearest_finite(self, cell: tuple[int, int], max_cells: int = 20):
        d = self.distances
        i, j = cell
        for r in range(1, max_cells + 1):
            lo_i, hi_i = max(i - r, 0), min(i + r + 1, d.shape[0])
            lo_j, hi_j = max(j - r, 0), min(j + r + 1, d.shape[1])
            block = np.isfinite(d[lo_i:hi_i, lo_j:hi_j])
            if block.any():
                ii, jj = np.nonzero(block)
                k = int(np.argmin((ii + lo_i - i) ** 2 + (jj + lo_j - j) ** 2))
                return (int(ii[k] + lo_i), int(jj[k] + lo_j))
        return None


def _xz(point) -> tuple[float, float]:
    p = np.asarray(point, dtype=float).ravel()
    if p.size == 3:
        return float(p[0]), float(p[2])
    if p.size == 2:
        return float(p[0]), float(p[1])
    raise ValueError(f"expected an (x, y, z) or (x, z) point, got {point!r}")


class NavGrid:
    """Occupancy grid, geodesic fields and collision for one scene and one agent size."""

    def __init__(self, scene: SceneSpec, agent_radius: float = 0.1, agent_height: float = 1.5,
                 cell_size: float = 0.05, max_y_delta: float = 0.5, cache_size: int = 32):
        if cell_size <= 0 or agent_radius < 0:
            raise ValueError(f"cell_size must be > 0 and agent_radius >= 0, got {cell_size}, "
                             f"{agent_radius}")
        self.scene = scene
        self.radius = float(agent_radius)
        self.height = float(agent_height)
        self.cell = float(cell_size)
        self.max_y_delta = float(max_y_delta)
        self.footprints: Footprints = scene.obstacles(agent_height)
        bx0, bz0, bx1, bz1 = scene.bounds
        self.bounds = (bx0, bz0, bx1, bz1)
        self.x0 = bx0 - self.cell
        self.z0 = bz0 - self.cell
        nx = int(math.ceil((bx1 - bx0) / self.cell)) + 2
        nz = int(math.ceil((bz1 - bz0) / self.cell)) + 2
        xs = self.x0 + (np.arange(nx) + 0.5) * self.cell
        zs = self.z0 + (np.arange(nz) + 0.5) * self.cell
        self.xs, self.zs = xs, zs
        gx, gz = np.meshgrid(xs, zs)
        self._gx, self._gz = gx, gz
        inside = (gx > bx0) & (gx < bx1) & (gz > bz0) & (gz < bz1)
        sd = self.footprints.signed_distance(np.stack([gx.ravel(), gz.ravel()], 1))
        self.clearance = sd.reshape(gx.shape).astype(np.float32)
        self.inside = inside
        self.navigable = inside & (self.clearance >= self.radius)
        self._fields: collections.OrderedDict[tuple, GeodesicField] = collections.OrderedDict()
        self._cache_size = cache_size
        self._labels: np.ndarray | None = None

    # ---- cells -----------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """(rows along z, columns along x)."""
        return self.navigable.shape

    def cell_of(self, x: float, z: float) -> tuple[int, int]:
        """(row, col) of the cell containing (x, z) (may be outside the grid)."""
        return (int(math.floor((z - self.z0) / self.cell)),
                int(math.floor((x - self.x0) / self.cell)))

    def cell_center(self, row: int, col: int) -> tuple[float, float]:
        """World (x, z) of a cell centre."""
        return (self.x0 + (col + 0.5) * self.cell, self.z0 + (row + 0.5) * self.cell)

    def in_grid(self, row: int, col: int) -> bool:
        """Whether (row, col) is a cell of the grid."""
        return 0 <= row < self.shape[0] and 0 <= col < self.shape[1]

    # ---- navigability ----------------------------------------------------------------------

    def signed_distance(self, points_xz: np.ndarray) -> np.ndarray:
        """Exact signed distance from (x, z) points to the nearest obstacle (metres)."""
        return self.footprints.signed_distance(points_xz)

    def is_navigable(self, point) -> bool:
        """Whether the agent can stand at ``point`` (x, y, z): on the floor, clear of obstacles."""
        p = np.asarray(point, dtype=float).ravel()
        if p.size != 3 or not np.all(np.isfinite(p)):
            return False
        if abs(p[1]) > self.max_y_delta:
            return False
        return self._free_xz(p[0], p[2])

    def _free_xz(self, x: float, z: float, fp: Footprints | None = None,
                 threshold: float | None = None) -> bool:
        bx0, bz0, bx1, bz1 = self.bounds
        if not (bx0 < x < bx1 and bz0 < z < bz1):
            return False
        fp = self.footprints if fp is None else fp
        thr = self.radius if threshold is None else threshold
        return bool(fp.signed_distance(np.array([[x, z]]))[0] >= thr - 1e-9)

    def snap(self, point, max_distance: float = 1.0) -> np.ndarray | None:
        """``point`` if navigable, else the nearest navigable cell centre (y = 0) or None.

        Only cells within ``max_distance`` metres count.
        """
        p = np.asarray(point, dtype=float).ravel()
        if p.size != 3:
            raise ValueError(f"expected an (x, y, z) point, got {point!r}")
        if self.is_navigable(p):
            return p.copy()
        if abs(p[1]) > self.max_y_delta:
            return None
        i, j = self.cell_of(p[0], p[2])
        r = int(math.ceil(max_distance / self.cell)) + 1
        lo_i, hi_i = max(i - r, 0), min(i + r + 1, self.shape[0])
        lo_j, hi_j = max(j - r, 0), min(j + r + 1, self.shape[1])
        if lo_i >= hi_i or lo_j >= hi_j:
            return None
        block = self.navigable[lo_i:hi_i, lo_j:hi_j]
        if not block.any():
            return None
        ii, jj = np.nonzero(block)
        cx = self.x0 + (jj + lo_j + 0.5) * self.cell
        cz = self.z0 + (ii + lo_i + 0.5) * self.cell
        dist = np.hypot(cx - p[0], cz - p[2])
        k = int(np.argmin(dist))
        if dist[k] > max_distance:
            return None
        return np.array([cx[k], 0.0, cz[k]])

    @property
    def labels(self) -> np.ndarray:
        """Connected components of the navigable cells (8-connected), 0 = not navigable."""
        if self._labels is None:
            from scipy import ndimage

            self._labels, _ = ndimage.label(self.navigable, structure=np.ones((3, 3)))
        return self._labels

    def largest_component(self) -> np.ndarray:
        """Boolean mask of the largest navigable island."""
        labels = self.labels
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        return labels == int(np.argmax(counts))

    def sample_navigable_point(self, rng: np.random.Generator,
                               largest_island: bool = True) -> np.ndarray:
        """A random navigable cell centre (x, 0, z), on the largest island by default."""
        mask = self.largest_component() if largest_island else self.navigable
        ii, jj = np.nonzero(mask)
        k = int(rng.integers(len(ii)))
        x, z = self.cell_center(int(ii[k]), int(jj[k]))
        return np.array([x, 0.0, z])

    # ---- geodesics -------------------------------------------------------------------------

    def field(self, goal) -> GeodesicField:
        """The geodesic field to ``goal`` (x, y, z), computed once and cached (LRU)."""
        g = np.asarray(goal, dtype=float).ravel()
        if g.size != 3 or not np.all(np.isfinite(g)):
            raise ValueError(f"goal must be a finite (x, y, z) point, got {goal!r}")
        key = (round(g[0], 3), round(g[2], 3))
        cached = self._fields.get(key)
        if cached is not None:
            self._fields.move_to_end(key)
            return cached
        result = self._compute_field(g)
        self._fields[key] = result
        if len(self._fields) > self._cache_size:
            self._fields.popitem(last=False)
        return result

    def _compute_field(self, goal: np.ndarray) -> GeodesicField:
        import skfmm

        gx, gz = goal[0], goal[2]
        snapped = goal
        phi, r0 = None, 0.75 * self.cell
        if self._free_xz(gx, gz):
            phi = np.hypot(self._gx - gx, self._gz - gz) - r0
            if not np.any(phi[self.navigable] < 0):
                phi = None
        if phi is None:
            snapped = self.snap(np.array([gx, 0.0, gz]), max_distance=1.0)
            if snapped is None:
                log.warning("goal %s is more than 1 m from any navigable point: every geodesic "
                            "to it is inf", goal.tolist())
                return GeodesicField(self, goal, np.full(self.shape, np.inf, np.float32))
            gx, gz = snapped[0], snapped[2]
            r0 = 0.5 * self.cell
            phi = np.hypot(self._gx - gx, self._gz - gz) - r0
        masked = np.ma.MaskedArray(phi, ~self.navigable)
        try:
            dist = skfmm.distance(masked, dx=self.cell, order=2)
            out = np.ma.filled(dist, np.inf).astype(np.float64) + r0
        except ValueError:  # no zero level set: the goal's disc covers its whole (tiny) island
            out = np.full(self.shape, np.inf)
        near = phi < 0
        out[near & self.navigable] = (phi + r0)[near & self.navigable]
        out[~self.navigable] = np.inf
        return GeodesicField(self, np.array([gx, 0.0, gz]), out.astype(np.float32))

    def geodesic_distance(self, a, b) -> float:
        """Shortest-path distance (metres) from ``a`` to ``b``; ``inf`` when unreachable."""
        return self.field(b).value_at(a)

    def shortest_path(self, a, b) -> np.ndarray:
        """The shortest path from ``a`` to ``b`` as (K, 3) points (y = 0); empty if unreachable.

        A taut polyline: the field's gradient descent (:meth:`GeodesicField.trace`), its points
        pushed out to the agent radius, string-pulled (:meth:`string_pull`). It starts at ``a``
        and ends at the field's goal (``b``, or the navigable point ``b`` was snapped to).
        """
        field = self.field(b)
        if not math.isfinite(field.value_at(a)):
            return np.zeros((0, 3))
        pts = self._round_corners(self.string_pull(self._push_clear(field.trace(a))))
        return np.stack([pts[:, 0], np.zeros(len(pts)), pts[:, 1]], 1)

    def segment_clear(self, a, b, threshold: float | None = None) -> bool:
        """Whether the agent disc fits everywhere on the straight segment from ``a`` to ``b``.

        ``a`` and ``b`` are (x, z) or (x, y, z); the segment is sampled every eighth of a cell
        and must stay inside the apartment with clearance >= ``threshold`` (the agent radius less
        :data:`PATH_SLACK` by default); between samples a segment passing an obstacle corner at
        the radius can dip by spacing^2 / (8 r), 0.05 mm. The end points are not checked.
        """
        pa, pb = np.array(_xz(a)), np.array(_xz(b))
        d = pb - pa
        length = float(np.hypot(*d))
        n = int(math.ceil(length / (0.125 * self.cell)))
        if n < 2:
            return True
        thr = self.radius - PATH_SLACK if threshold is None else float(threshold)
        mid = 0.5 * (pa + pb)
        fp = self.footprints.subset_near(mid[0], mid[1], 0.5 * length + self.radius + 0.1)
        pts = pa[None] + np.linspace(0.0, 1.0, n + 1)[1:-1, None] * d[None]
        return bool(self._free_points(fp, pts, thr).all())

    def string_pull(self, points: np.ndarray) -> np.ndarray:
        """Shortcut a polyline ((K, 2) x, z) with straight segments the agent disc fits through.

        Greedy: from each kept point, jump to the farthest later point in straight-line sight
        (found by doubling then bisection); neighbouring points are always joined, so the result
        never leaves the corridor of the input. The first and last points are kept.
        """
        pts = np.asarray(points, dtype=float)
        n = len(pts)
        if n <= 2:
            return pts.copy()
        keep = [0]
        i = 0
        while i < n - 1:
            good, bad = i + 1, None  # good: in sight (neighbours always are); bad: not in sight
            stride = 1
            while bad is None and good < n - 1:
                probe = min(good + stride, n - 1)
                if self.segment_clear(pts[i], pts[probe]):
                    good = probe
                    stride *= 2
                else:
                    bad = probe
            while bad is not None and bad - good > 1:
                mid = (good + bad) // 2
                if self.segment_clear(pts[i], pts[mid]):
                    good = mid
                else:
                    bad = mid
            keep.append(good)
            i = good
        return pts[keep]

    def _push_clear(self, points: np.ndarray) -> np.ndarray:
        """Points closer than the agent radius to an obstacle moved out along its normal.

        The first and last points stay; an inner point that cannot be cleared is dropped.
        """
        pts = np.asarray(points, dtype=float).copy()
        if len(pts) <= 2:
            return pts
        inner = pts[1:-1]
        for _ in range(3):
            sd = self.footprints.signed_distance(inner)
            low = sd < self.radius
            if not low.any():
                break
            inner[low] += ((self.radius - sd[low] + 1e-5)[:, None]
                           * self._normals(self.footprints, inner[low]))
        ok = self._free_points(self.footprints, inner, self.radius - 1e-6)
        return np.concatenate([pts[:1], inner[ok], pts[-1:]])

    def _round_corners(self, points: np.ndarray, depth: int = 4) -> np.ndarray:
        """Split segments that come more than :data:`PATH_SLACK` inside the radius.

        Such a segment is a chord between two neighbouring points around a rounded corner, which
        :meth:`string_pull` joins unchecked; it is split at its midpoint, pushed out, up to
        ``depth`` times.
        """
        pts = [points[0]]
        for a, b in zip(points[:-1], points[1:]):
            pts += self._split_segment(a, b, depth)
        return np.array(pts)

    def _split_segment(self, a: np.ndarray, b: np.ndarray, depth: int) -> list[np.ndarray]:
        if depth == 0 or self.segment_clear(a, b):
            return [b]
        mid = self._push_clear(np.array([a, 0.5 * (a + b), b]))
        if len(mid) < 3:
            return [b]
        return self._split_segment(a, mid[1], depth - 1) + self._split_segment(mid[1], b,
                                                                              depth - 1)

    @staticmethod
    def _normals(fp: Footprints, pts: np.ndarray) -> np.ndarray:
        """Unit gradients of the signed distance at (N, 2) points (0 where undefined)."""
        e = 0.004
        gx = fp.signed_distance(pts + [e, 0.0]) - fp.signed_distance(pts - [e, 0.0])
        gz = fp.signed_distance(pts + [0.0, e]) - fp.signed_distance(pts - [0.0, e])
        g = np.stack([gx, gz], 1)
        norm = np.hypot(gx, gz)[:, None]
        return np.where(norm > 1e-9, g / np.maximum(norm, 1e-12), 0.0)

    # ---- motion ----------------------------------------------------------------------------

    def try_step(self, position, delta_xz, allow_sliding: bool = True
                 ) -> tuple[np.ndarray, bool]:
        """Move the agent disc from ``position`` by ``delta_xz``; return (new position, collided).

        The agent moves until contact; with ``allow_sliding`` the rest of the step continues along
        the contact's tangent. ``collided`` is True whenever the step was cut short.
        """
        p = np.asarray(position, dtype=float).ravel()
        d = np.asarray(delta_xz, dtype=float).ravel()
        start = np.array([p[0], p[2]])
        length = float(np.hypot(*d))
        if length == 0.0:
            return p.copy(), False
        fp = self.footprints.subset_near(start[0], start[1], length + self.radius + 0.1)
        # never get stuck because a start point sits a hair inside the clearance
        here = float(fp.signed_distance(start[None])[0]) if (len(fp.rect_center)
                                                             or len(fp.circle_center)) else np.inf
        thr = min(self.radius, here) - 1e-7
        t = self._free_fraction(fp, start, d, thr)
        end = start + t * d
        collided = t < 1.0
        if collided and allow_sliding:
            rest = (1.0 - t) * d
            normal = self._normal(fp, end)
            into = float(rest @ normal)
            if into < 0:
                tangent = rest - into * normal
                if np.hypot(*tangent) > 1e-6:
                    t2 = self._free_fraction(fp, end, tangent, thr)
                    end = end + t2 * tangent
        return np.array([end[0], p[1], end[1]]), collided

    def _free_fraction(self, fp: Footprints, start: np.ndarray, d: np.ndarray,
                       thr: float) -> float:
        """Largest t in [0, 1] such that the segment start..start+t*d keeps clearance >= thr."""
        length = float(np.hypot(*d))
        n = max(2, int(math.ceil(length / 0.01)))
        ts = np.linspace(0.0, 1.0, n + 1)[1:]
        pts = start[None] + ts[:, None] * d[None]
        ok = self._free_points(fp, pts, thr)
        if ok.all():
            return 1.0
        k = int(np.argmin(ok))  # first blocked sample
        lo = 0.0 if k == 0 else float(ts[k - 1])
        hi = float(ts[k])
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            if self._free_points(fp, (start + mid * d)[None], thr)[0]:
                lo = mid
            else:
                hi = mid
        return lo

    def _free_points(self, fp: Footprints, pts: np.ndarray, thr: float) -> np.ndarray:
        bx0, bz0, bx1, bz1 = self.bounds
        inside = (pts[:, 0] > bx0) & (pts[:, 0] < bx1) & (pts[:, 1] > bz0) & (pts[:, 1] < bz1)
        if len(fp.rect_center) == 0 and len(fp.circle_center) == 0:
            return inside
        return inside & (fp.signed_distance(pts) >= thr)

    @staticmethod
    def _normal(fp: Footprints, p: np.ndarray) -> np.ndarray:
        """Unit gradient of the signed distance at ``p`` (points away from the obstacle)."""
        e = 0.004
        probe = np.array([[p[0] + e, p[1]], [p[0] - e, p[1]], [p[0], p[1] + e],
                          [p[0], p[1] - e]])
        sd = fp.signed_distance(probe)
        g = np.array([sd[0] - sd[1], sd[2] - sd[3]])
        norm = float(np.hypot(*g))
        return g / norm if norm > 1e-9 else np.zeros(2)

    # ---- maps ------------------------------------------------------------------------------

    def top_down_map(self):
        """An RGB occupancy map of the scene plus its world <-> pixel transform.

        Returns a :class:`sim_bridge.simulator.TopDownMap` with one pixel per grid cell.
        """
        from sim_bridge.simulator import TopDownMap

        pts = np.stack([self._gx.ravel(), self._gz.ravel()], 1)
        walls = footprints_of(self.scene.walls, [], self.height).signed_distance(pts)
        furn = footprints_of([], self.scene.objects, self.height).signed_distance(pts)
        walls = walls.reshape(self.shape)
        furn = furn.reshape(self.shape)
        img = np.full(self.shape + (3,), 255, np.uint8)
        img[self.inside] = (214, 214, 208)
        img[self.navigable] = (248, 246, 238)
        img[self.inside & (furn <= 0)] = (168, 160, 150)
        img[walls <= 0] = (60, 60, 66)
        return TopDownMap(image=img, navigable=self.navigable.copy(), meters_per_pixel=self.cell,
                          origin=(self.x0, self.z0))


class ShortestPathExpert:
    """The next VLN-CE action along the shortest path to a goal (see the module docstring).

    ``stop_radius``: STOP once the geodesic distance to the goal is below this many metres.
    ``heading_tolerance_deg``: turn only while the heading error is above this (default: half a
    turn, the tightest tracking the turn angle allows; wider gives fewer zig-zags).
    The motion model (``forward_step``, ``turn_angle_deg``, ``allow_sliding``) must match the
    simulator's, because the expert simulates a forward step to decide whether it helps.
    """

    def __init__(self, grid: NavGrid, forward_step: float = 0.25, turn_angle_deg: float = 15.0,
                 stop_radius: float = 0.25, allow_sliding: bool = True, lookahead: float = 1.0,
                 min_progress: float = 0.05, heading_tolerance_deg: float | None = None):
        if stop_radius <= 0:
            raise ValueError(f"stop_radius must be > 0, got {stop_radius}")
        self.grid = grid
        self.forward_step = float(forward_step)
        self.turn = math.radians(turn_angle_deg)
        self.tolerance = (self.turn / 2 if heading_tolerance_deg is None
                          else math.radians(heading_tolerance_deg))
        self.stop_radius = float(stop_radius)
        self.allow_sliding = allow_sliding
        self.lookahead = float(lookahead)
        self.min_progress = min(float(min_progress), 0.5 * self.forward_step)
        self._commit: tuple[tuple[float, float], Action, int] | None = None

    def reset(self) -> None:
        """Forget the turning commitment (call at the start of every episode)."""
        self._commit = None

    def next_action(self, position, yaw: float, goal) -> Action:
        """The action to take at ``position`` (x, y, z) facing ``yaw`` to reach ``goal``."""
        field = self.grid.field(goal)
        p = np.asarray(position, dtype=float).ravel()
        dist = field.value_at(p)
        if not math.isfinite(dist):
            log.warning("expert: goal %s is unreachable from %s; answering STOP",
                        np.round(np.asarray(goal, float), 3).tolist(), np.round(p, 3).tolist())
            return Action.STOP
        if dist < self.stop_radius:  # strictly, as habitat-sim's GreedyGeodesicFollower
            self._commit = None
            return Action.STOP
        key = (round(p[0], 4), round(p[2], 4))
        if self._commit is not None and self._commit[0] != key:
            self._commit = None  # the agent moved: the commitment is stale
        if self._commit is None:
            carrot = self._carrot(field, p)
            error = wrap_angle(heading_to(carrot[0] - p[0], carrot[1] - p[2]) - yaw)
            if abs(error) > self.tolerance + 1e-6:
                return Action.TURN_LEFT if error > 0 else Action.TURN_RIGHT
            if self._progress(field, p, yaw, dist) >= self.min_progress:
                return Action.MOVE_FORWARD
            # blocked although aimed at the carrot: turn one way until forward helps again
            turn = Action.TURN_LEFT if error >= 0 else Action.TURN_RIGHT
            self._commit = (key, turn, 1)
            return turn
        _, turn, count = self._commit
        if self._progress(field, p, yaw, dist) >= self.min_progress:
            self._commit = None
            return Action.MOVE_FORWARD
        if count * self.turn > 2 * math.pi + 1e-6:
            log.warning("expert: no heading makes progress at %s; answering STOP",
                        np.round(p, 3).tolist())
            self._commit = None
            return Action.STOP
        self._commit = (key, turn, count + 1)
        return turn

    def _progress(self, field: GeodesicField, p: np.ndarray, yaw: float, dist: float) -> float:
        new, _ = self.grid.try_step(p, self.forward_step * forward_vector(yaw),
                                    self.allow_sliding)
        return dist - field.value_at(new)

    def _carrot(self, field: GeodesicField, p: np.ndarray) -> np.ndarray:
        """The farthest path point within ``lookahead`` metres that is in straight-line sight."""
        path = field.descend(p, max_length=self.lookahead + 2 * self.grid.cell)
        seg = np.diff(path, axis=0)
        along = np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
        candidates = np.nonzero(along <= self.lookahead + 1e-9)[0][::-1]
        start = np.array([p[0], p[2]])
        fp = self.grid.footprints.subset_near(start[0], start[1], self.lookahead + 0.5)
        thr = self.grid.radius - 0.02
        for k in candidates:
            if k == 0:
                break
            target = path[k]
            d = target - start
            n = max(2, int(math.ceil(np.hypot(*d) / (0.5 * self.grid.cell))))
            pts = start[None] + np.linspace(0, 1, n + 1)[1:, None] * d[None]
            if self.grid._free_points(fp, pts, thr).all():
                return target
        return path[min(1, len(path) - 1)]
