"""VLN-CE episode metrics, owned here and shared by every simulator backend.

Definitions follow habitat-lab (``DistanceToGoal``, ``Success``, ``SPL``) and VLN-CE's
``habitat_extensions`` (``OracleSuccess``, ``PathLength``, ``NDTW``, ``SDTW``):

- **NE** (navigation error): geodesic distance from the final position to the goal, metres.
- **SR** (success): the agent called STOP and NE < ``success_distance`` (3 m). habitat compares
  strictly (``distance_to_target < success_distance``); so do we.
- **OS** (oracle success): the distance to goal was below ``success_distance`` at some point of the
  path (the start included).
- **SPL**: SR * d0 / max(path_length, d0), d0 = geodesic start-to-goal distance, path_length the
  sum of Euclidean distances between successive agent positions.
- **nDTW**: exp(-DTW(path, gt) / (|gt| * success_distance)), exact dynamic time warping with
  Euclidean point distances (VLN-CE uses fastdtw, an approximation; we compute the exact value).
  ``path`` holds the agent positions with consecutive repeats dropped (as VLN-CE's NDTW does), and
  ``gt`` is the dense ``_gt`` locations (the sparse ``reference_path`` when no ``_gt`` exists;
  the record says which).
- **SDTW**: SR * nDTW.
- **steps**: actions sent to the environment, the final STOP included. **collisions**: steps whose
  move was blocked.

:class:`EpisodeMetrics` is updated once per step by the runner; :func:`aggregate` averages
per-episode records into a table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

SUCCESS_DISTANCE = 3.0

# the metrics of one episode that aggregate() averages, in report order
METRIC_KEYS = ("ne", "os", "sr", "spl", "ndtw", "sdtw", "path_length", "steps", "collisions")
# keys shown as percentages in tables (stored as fractions in [0, 1])
PERCENT_KEYS = ("os", "sr", "spl", "ndtw", "sdtw")


def dtw_distance(path: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]) -> float:
    """Exact DTW cost between two point sequences with Euclidean point distances.

    Classic recurrence ``C[i, j] = d(i, j) + min(C[i-1, j], C[i, j-1], C[i-1, j-1])`` with
    ``C[0, 0] = d(0, 0)``. Each row is solved in one vectorised pass: with ``a_j`` the best of
    the two cells above, ``C[i, j] = D_j + min_{k <= j} (a_k - D_{k-1})`` where ``D`` is the
    running sum of the row's distances (a min-plus prefix scan).
    """
    p = np.asarray(path, dtype=np.float64)
    q = np.asarray(reference, dtype=np.float64)
    if p.ndim != 2 or q.ndim != 2 or len(p) == 0 or len(q) == 0:
        raise ValueError("dtw_distance needs two non-empty sequences of points")
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"point dimensions differ: {p.shape[1]} vs {q.shape[1]}")
    dist = np.sqrt(((p[:, None, :] - q[None, :, :]) ** 2).sum(-1))  # (n, m)
    prev = np.cumsum(dist[0])  # first row: only moves along the reference
    for i in range(1, len(p)):
        row = dist[i]
        above = np.empty_like(prev)
        above[0] = prev[0]
        above[1:] = np.minimum(prev[1:], prev[:-1])
        csum = np.cumsum(row)
        shifted = np.concatenate(([0.0], csum[:-1]))
        prev = csum + np.minimum.accumulate(above - shifted)
    return float(prev[-1])


def ndtw(
    path: Sequence[Sequence[float]],
    reference: Sequence[Sequence[float]],
    success_distance: float = SUCCESS_DISTANCE,
) -> float:
    """Normalised DTW: ``exp(-DTW(path, reference) / (len(reference) * success_distance))``."""
    return math.exp(-dtw_distance(path, reference) / (len(reference) * success_distance))


def spl(success: float, geodesic_start: float, path_length: float) -> float:
    """Success weighted by path length; a zero-length episode that succeeds scores ``success``.

    A failed episode scores 0 even when the goal was unreachable (``geodesic_start`` inf), where
    the plain formula gives NaN (the RxR-CE NaN-SPL episodes).
    """
    if not success:
        return 0.0
    denom = max(path_length, geodesic_start)
    if denom <= 0.0:
        return float(success)
    return float(success) * geodesic_start / denom


def dedup_consecutive(points: Iterable[Sequence[float]]) -> list[list[float]]:
    """Drop points equal to their predecessor (turns and blocked moves do not add points)."""
    out: list[list[float]] = []
    for p in points:
        q = [float(v) for v in p]
        if not out or q != out[-1]:
            out.append(q)
    return out


@dataclasses.dataclass
class EpisodeMetrics:
    """Accumulates one episode's measurements; call :meth:`update` after every step.

    Build it at reset with the start position, the start distance to goal and the geodesic
    start-to-goal distance (``geodesic_start``; the runner passes the simulator's value, as habitat
    recomputes it at reset). ``reference`` is the ground-truth path for nDTW (dense ``_gt``
    locations when available). Then ``update(...)`` once per executed action, with the position and
    distance to goal after the action, and :meth:`result` at the end.
    """

    start_position: Sequence[float]
    start_distance_to_goal: float
    geodesic_start: float
    reference: Sequence[Sequence[float]] | None = None
    reference_source: str = "gt"
    success_distance: float = SUCCESS_DISTANCE

    def __post_init__(self):
        start = [float(v) for v in self.start_position]
        self.positions: list[list[float]] = [start]
        self.distances: list[float] = [float(self.start_distance_to_goal)]
        self.path_length = 0.0
        self.steps = 0
        self.collisions = 0
        self.stop_called = False
        self.min_distance = float(self.start_distance_to_goal)

    def update(
        self,
        position: Sequence[float],
        distance_to_goal: float,
        collided: bool = False,
        stop: bool = False,
    ) -> None:
        """Record one executed action (``stop=True`` for STOP) and where it left the agent."""
        if self.stop_called:
            raise RuntimeError("EpisodeMetrics.update after STOP: the episode is over")
        pos = [float(v) for v in position]
        self.path_length += float(np.linalg.norm(np.subtract(pos, self.positions[-1])))
        self.positions.append(pos)
        self.distances.append(float(distance_to_goal))
        self.min_distance = min(self.min_distance, float(distance_to_goal))
        self.steps += 1
        self.collisions += int(bool(collided))
        self.stop_called = self.stop_called or bool(stop)

    @property
    def distance_to_goal(self) -> float:
        """The current (final, once over) distance to goal."""
        return self.distances[-1]

    def result(self) -> dict[str, Any]:
        """The episode's metrics as a plain dict (fractions for SR/OS/SPL/nDTW/SDTW)."""
        ne = self.distance_to_goal
        success = float(self.stop_called and ne < self.success_distance)
        oracle = float(self.min_distance < self.success_distance)
        out: dict[str, Any] = {
            "ne": ne,
            "sr": success,
            "os": oracle,
            "spl": spl(success, self.geodesic_start, self.path_length),
            "path_length": self.path_length,
            "steps": self.steps,
            "collisions": self.collisions,
            "geodesic_start": float(self.geodesic_start),
            "oracle_ne": self.min_distance,
            "stop_called": self.stop_called,
        }
        if self.reference is not None and len(self.reference) > 0:
            value = ndtw(dedup_consecutive(self.positions), self.reference, self.success_distance)
            out["ndtw"] = value
            out["sdtw"] = success * value
            out["ndtw_reference"] = self.reference_source
        else:
            out["ndtw"] = None
            out["sdtw"] = None
            out["ndtw_reference"] = None
        return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def aggregate(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean of each metric over episode records.

    A record is either a metrics dict or a results-file record with a ``metrics`` field and a
    ``status``; records with ``status != "ok"`` are counted as errors and left out. A metric that
    is missing, None or not finite in a record (RxR's NaN SPL / infinite NE cases) is left out of
    that metric's mean and counted in ``skipped``. ``degenerate`` counts the episodes that start
    at the goal and those whose goal is unreachable (see
    :data:`sim_bridge.protocol.DEGENERATE_RULE` for how they are scored). Sums are exact
    (``math.fsum``), so the result
    does not depend on the order of the records.
    """
    values: dict[str, list[float]] = {k: [] for k in METRIC_KEYS}
    counts = dict.fromkeys(METRIC_KEYS, 0)
    skipped = dict.fromkeys(METRIC_KEYS, 0)
    degenerate = {"start_at_goal": 0, "unreachable_goal": 0}
    episodes = errors = 0
    for record in records:
        if record.get("status", "ok") != "ok":
            errors += 1
            continue
        metrics = record.get("metrics", record)
        episodes += 1
        d0 = metrics.get("geodesic_start")
        if "geodesic_start" in metrics and not _finite(d0):
            degenerate["unreachable_goal"] += 1
        elif _finite(d0) and d0 < 1e-6:
            degenerate["start_at_goal"] += 1
        for key in METRIC_KEYS:
            value = metrics.get(key)
            if _finite(value):
                values[key].append(float(value))
                counts[key] += 1
            else:
                skipped[key] += 1
    # fsum is exact, so the means do not depend on the order of the records (shard layout)
    means = {k: (math.fsum(values[k]) / counts[k] if counts[k] else None) for k in METRIC_KEYS}
    return {
        "episodes": episodes,
        "errors": errors,
        "metrics": means,
        "counts": counts,
        "skipped": {k: v for k, v in skipped.items() if v},
        "degenerate": degenerate,
    }


def format_table(summary: Mapping[str, Any], title: str | None = None,
                 notes: Sequence[str] = ()) -> str:
    """A markdown table of an :func:`aggregate` summary (percentages for SR/OS/SPL/nDTW/SDTW).

    ``notes`` are lines printed under the table (the protocol, the degenerate-episode rule), so
    the numbers do not travel without them.
    """
    labels = {
        "ne": "NE (m)", "os": "OS", "sr": "SR", "spl": "SPL", "ndtw": "nDTW", "sdtw": "SDTW",
        "path_length": "PL (m)", "steps": "Steps", "collisions": "Coll.",
    }
    metrics = summary["metrics"]
    cells = []
    for key in METRIC_KEYS:
        value = metrics.get(key)
        if value is None:
            cells.append("-")
        elif key in PERCENT_KEYS:
            cells.append(f"{100.0 * value:.1f}")
        else:
            cells.append(f"{value:.2f}")
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [
        "| Episodes | " + " | ".join(labels[k] for k in METRIC_KEYS) + " |",
        "|---:|" + "---:|" * len(METRIC_KEYS),
        f"| {summary['episodes']} | " + " | ".join(cells) + " |",
    ]
    if summary.get("errors"):
        lines += ["", f"{summary['errors']} episode(s) failed (status error) and are not in the "
                  "means."]
    if notes:
        lines += [""] + [str(n) for n in notes]
    return "\n".join(lines) + "\n"
