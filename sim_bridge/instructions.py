"""Route descriptions for generated episodes: rooms, turns and landmarks along an expert path.

Two steps, both deterministic given a seeded ``numpy`` generator:

1. :func:`route_events` reads the dense expert path (habitat coordinates: x right, z back, y up;
   yaw about +y, 0 looking along -z, positive yaw = turning left) and finds what a person would
   mention: the initial turn relative to the start heading, the turns along the way, the rooms
   entered, landmarks passed (with the side they are on) and where to stop.
2. :func:`render_instruction` turns those events into English from several phrasings per event
   kind, so two episodes along similar routes read differently and a model has to read the
   words (turn directions, room names and landmark names carry the route).

The geometry needs only a ``room_at(x, z)`` callable returning an object with ``name`` / ``type``
(or None outside rooms) and landmarks with ``name`` and ``position``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# thresholds (degrees / metres)
TURN_MIN_DEG = 30.0  # smaller heading changes are "keep going"
SLIGHT_MAX_DEG = 60.0  # 30..60: a slight turn
AROUND_MIN_DEG = 135.0  # above: turn around
MERGE_TURNS_WITHIN_M = 0.75  # turns closer than this along the path are one turn
SIMPLIFY_EPS_M = 0.35  # Ramer-Douglas-Peucker tolerance for the path outline
ROOM_MIN_RUN = 3  # points a room must hold in a row to count as entered (debounce doorways)
PASS_RADIUS_M = 1.6  # a landmark this close to the path is "passed"
GOAL_LANDMARK_RADIUS_M = 2.5  # a landmark this close to the goal names the stop
MAX_PASSED = 2  # landmarks mentioned along the way


@dataclasses.dataclass
class RouteEvent:
    """One thing an instruction mentions, at ``index`` along the dense path.

    ``kind`` is ``start`` (initial turn; ``direction`` may be None), ``turn``, ``enter`` (a
    room), ``pass`` (a landmark, with ``side``), ``walk`` (a long straight stretch,
    ``distance``) or ``stop`` (with an optional ``landmark`` and ``room``).
    """

    kind: str
    index: int
    direction: str | None = None  # left | right | slight_left | slight_right | around
    room: str | None = None
    landmark: str | None = None
    side: str | None = None
    distance: float | None = None


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def heading_of(dx: float, dz: float) -> float:
    """Yaw of the direction (dx, dz) in the xz plane (0 = -z, positive = towards -x, i.e. left)."""
    return math.atan2(-dx, -dz)


def turn_direction(delta_rad: float) -> str | None:
    """Name a heading change: None (straight), slight_left/right, left/right or around."""
    deg = math.degrees(delta_rad)
    mag = abs(deg)
    if mag < TURN_MIN_DEG:
        return None
    if mag >= AROUND_MIN_DEG:
        return "around"
    side = "left" if deg > 0 else "right"
    return f"slight_{side}" if mag < SLIGHT_MAX_DEG else side


def simplify(points: np.ndarray, eps: float = SIMPLIFY_EPS_M) -> list[int]:
    """Indices kept by Ramer-Douglas-Peucker on 2-D points (first and last always kept)."""
    n = len(points)
    if n <= 2:
        return list(range(n))
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        a, b = points[i], points[j]
        seg = b - a
        length = float(np.hypot(*seg))
        rel = points[i + 1 : j] - a
        if length < 1e-9:
            dist = np.hypot(rel[:, 0], rel[:, 1])
        else:
            dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / length
        k = int(np.argmax(dist))
        if dist[k] > eps:
            m = i + 1 + k
            keep[m] = True
            stack += [(i, m), (m, j)]
    return [int(i) for i in np.flatnonzero(keep)]


def room_label(room: Any, landmarks: Sequence[Any] = ()) -> str | None:
    """How an instruction names a room: its name, or its type when the name is an id.

    "bedroom 2" becomes "bedroom", told apart by a landmark in it ("bedroom with the blue bed")
    when there is one.
    """
    if room is None:
        return None
    name = getattr(room, "name", None)
    kind = getattr(room, "type", None)
    if name and not any(ch.isdigit() for ch in str(name)):
        return str(name).replace("_", " ")
    label = str(kind).replace("_", " ") if kind else (str(name) if name else None)
    for lm in landmarks:
        if name is not None and getattr(lm, "room", None) == name:
            return f"{label} with the {lm.name}"
    return label


def route_events(
    path: Sequence[Sequence[float]],
    start_yaw: float,
    room_at: Callable[[float, float], Any],
    landmarks: Sequence[Any] = (),
    goal: Sequence[float] | None = None,
) -> list[RouteEvent]:
    """Find the turns, rooms, landmarks and stop along a dense path (see the module docstring)."""
    pts = np.asarray(path, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError("path must be a non-empty list of [x, y, z] points")
    xz = pts[:, [0, 2]]
    goal_xz = np.asarray(goal, dtype=np.float64)[[0, 2]] if goal is not None else xz[-1]
    events: list[RouteEvent] = []
    cum = np.concatenate(([0.0], np.cumsum(np.hypot(*np.diff(xz, axis=0).T))))

    # outline and turns
    keep = simplify(xz)
    headings = []
    for a, b in zip(keep[:-1], keep[1:]):
        d = xz[b] - xz[a]
        headings.append((a, b, heading_of(d[0], d[1]), float(cum[b] - cum[a])))
    if headings:
        first = turn_direction(_wrap(headings[0][2] - start_yaw))
        events.append(RouteEvent("start", 0, direction=first))
        pending = 0.0
        pending_at = None
        for (_, b0, h0, _), (_, _, h1, len1) in zip(headings[:-1], headings[1:]):
            pending += _wrap(h1 - h0)
            pending_at = b0 if pending_at is None else pending_at
            if len1 < MERGE_TURNS_WITHIN_M:
                continue  # a short leg: the turn continues into the next one
            direction = turn_direction(_wrap(pending))
            if direction is not None:
                events.append(RouteEvent("turn", int(pending_at), direction=direction))
            pending, pending_at = 0.0, None
        for a, _b, _, length in headings:
            if length >= 4.0:
                events.append(RouteEvent("walk", int(a), distance=length))
    else:
        events.append(RouteEvent("start", 0))

    # rooms entered (debounced: a room must hold ROOM_MIN_RUN points in a row)
    labels = [room_label(room_at(float(x), float(z)), landmarks) for x, z in xz]
    runs: list[tuple[str, int, int]] = []
    for i, label in enumerate(labels):
        if label is None:
            continue
        if runs and runs[-1][0] == label and runs[-1][2] == i - 1:
            runs[-1] = (label, runs[-1][1], i)
        elif runs and runs[-1][0] == label:
            runs[-1] = (label, runs[-1][1], i)  # same room after a gap (a doorway cell)
        else:
            runs.append((label, i, i))
    runs = [r for r in runs if r[2] - r[1] + 1 >= ROOM_MIN_RUN or r is runs[-1]]
    merged: list[tuple[str, int, int]] = []
    for r in runs:
        if merged and merged[-1][0] == r[0]:
            merged[-1] = (r[0], merged[-1][1], r[2])
        else:
            merged.append(r)
    start_room = labels[0] if labels[0] is not None else (merged[0][0] if merged else None)
    if events and events[0].kind == "start":
        events[0].room = start_room
    for j, (label, i0, _) in enumerate(merged):
        if j == 0 and label == start_room:
            continue
        events.append(RouteEvent("enter", int(i0), room=label))
    final_room = merged[-1][0] if merged else start_room

    # landmarks: the one at the goal names the stop; close ones along the way are passed
    goal_room = getattr(room_at(float(goal_xz[0]), float(goal_xz[1])), "name", None)
    stop_landmark = None
    best = GOAL_LANDMARK_RADIUS_M
    for lm in landmarks:
        if not _same_room(lm, goal_room):
            continue  # not through a wall
        p = np.asarray(lm.position, dtype=np.float64)[[0, 2]]
        d = float(np.hypot(*(p - goal_xz)))
        if d < best:
            best, stop_landmark = d, lm
    passed = []
    for lm in landmarks:
        if lm is stop_landmark:
            continue
        p = np.asarray(lm.position, dtype=np.float64)[[0, 2]]
        dist = np.hypot(*(xz - p).T)
        i = int(np.argmin(dist))
        here = getattr(room_at(float(xz[i, 0]), float(xz[i, 1])), "name", None)
        if (dist[i] < PASS_RADIUS_M and 0 < i < len(xz) - 1 and cum[-1] - cum[i] > 1.0
                and _same_room(lm, here)):
            passed.append((float(dist[i]), i, lm))
    passed.sort(key=lambda t: t[0])
    for _, i, lm in passed[:MAX_PASSED]:
        j = min(i + 1, len(xz) - 1)
        fwd = xz[j] - xz[max(i - 1, 0)]
        to_lm = np.asarray(lm.position, dtype=np.float64)[[0, 2]] - xz[i]
        left = np.array([fwd[1], -fwd[0]])  # the heading rotated +90 deg about +y
        side = "left" if float(np.dot(left, to_lm)) > 0 else "right"
        events.append(RouteEvent("pass", i, landmark=str(lm.name), side=side))

    events.append(
        RouteEvent("stop", len(xz) - 1, room=final_room,
                   landmark=str(stop_landmark.name) if stop_landmark is not None else None)
    )
    order = {"start": 0, "turn": 1, "walk": 2, "enter": 3, "pass": 4, "stop": 5}
    events.sort(key=lambda e: (e.index if e.kind not in ("start", "stop") else
                               (-1 if e.kind == "start" else len(xz) + 1), order[e.kind]))
    return events


def _same_room(landmark: Any, room_name: str | None) -> bool:
    """Whether a landmark is in the named room (True when either side does not say)."""
    lm_room = getattr(landmark, "room", None)
    return lm_room is None or room_name is None or lm_room == room_name


# ---- rendering -----------------------------------------------------------------------------------

_TURN = {
    "left": ["turn left", "take a left", "make a left turn", "go left", "hang a left"],
    "right": ["turn right", "take a right", "make a right turn", "go right", "hang a right"],
    "slight_left": ["bear left", "veer slightly left", "turn slightly to the left"],
    "slight_right": ["bear right", "veer slightly right", "turn slightly to the right"],
    "around": ["turn around", "make a u-turn", "turn all the way around"],
}
_START_TURN = {
    "left": ["turn to your left", "turn left", "face left"],
    "right": ["turn to your right", "turn right", "face right"],
    "slight_left": ["turn slightly left", "face a little to the left"],
    "slight_right": ["turn slightly right", "face a little to the right"],
    "around": ["turn around", "turn so you face the opposite way", "turn around completely"],
}
_EXIT = ["exit the {room}", "leave the {room}", "walk out of the {room}", "head out of the {room}"]
_WALK = ["walk forward", "go straight ahead", "head forward", "walk straight"]
_WALK_FAR = ["walk straight for about {m} meters", "continue forward roughly {m} meters",
             "go straight about {m} meters"]
_ENTER = ["enter the {room}", "walk into the {room}", "go into the {room}",
          "continue into the {room}", "step into the {room}"]
_PASS = ["walk past the {lm}", "pass the {lm}", "go past the {lm}", "continue past the {lm}"]
_PASS_SIDE = ["keep the {lm} on your {side}", "pass the {lm} on your {side}",
              "go by the {lm} with it on your {side}"]
_STOP_LM = ["stop next to the {lm}", "wait by the {lm}", "stop in front of the {lm}",
            "stop when you reach the {lm}", "stop near the {lm}"]
_STOP_LM_ROOM = ["stop next to the {lm} in the {room}", "wait by the {lm} in the {room}"]
_STOP_ROOM = ["stop in the {room}", "wait in the {room}", "stop once you are in the {room}"]
_STOP = ["stop there", "wait there", "and stop"]
_JOIN = [", then ", " and ", ". ", ", "]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _clauses(events: Sequence[RouteEvent], rng: np.random.Generator) -> list[str]:
    clauses: list[str] = []
    entered = {e.index for e in events if e.kind == "enter"}
    for k, ev in enumerate(events):
        if ev.kind == "start":
            if ev.direction is not None:
                clauses.append(_pick(rng, _START_TURN[ev.direction]))
            nxt = next((e for e in events[k + 1:] if e.kind in ("enter", "stop")), None)
            leaves = nxt is not None and nxt.kind == "enter" and ev.room and nxt.room != ev.room
            clauses.append(_pick(rng, _EXIT).format(room=ev.room) if leaves
                           else _pick(rng, _WALK))
        elif ev.kind == "turn":
            clauses.append(_pick(rng, _TURN[ev.direction]))
        elif ev.kind == "walk":
            if ev.index not in entered and rng.random() < 0.5:
                clauses.append(_pick(rng, _WALK_FAR).format(m=int(round(ev.distance))))
        elif ev.kind == "enter":
            clauses.append(_pick(rng, _ENTER).format(room=ev.room))
        elif ev.kind == "pass":
            if rng.random() < 0.5:
                clauses.append(_pick(rng, _PASS_SIDE).format(lm=ev.landmark, side=ev.side))
            else:
                clauses.append(_pick(rng, _PASS).format(lm=ev.landmark))
        elif ev.kind == "stop":
            if ev.landmark and ev.room and ev.landmark not in ev.room and rng.random() < 0.4:
                clauses.append(_pick(rng, _STOP_LM_ROOM).format(lm=ev.landmark, room=ev.room))
            elif ev.landmark:
                clauses.append(_pick(rng, _STOP_LM).format(lm=ev.landmark))
            elif ev.room:
                clauses.append(_pick(rng, _STOP_ROOM).format(room=ev.room))
            else:
                clauses.append(_pick(rng, _STOP))
    return clauses


def render_instruction(events: Sequence[RouteEvent], rng: np.random.Generator) -> str:
    """English text for ``events`` with randomly chosen phrasings and joints."""
    clauses = _clauses(events, rng)
    text = ""
    for i, clause in enumerate(clauses):
        if i == 0:
            text = clause[0].upper() + clause[1:]
            continue
        joint = _pick(rng, _JOIN)
        if clause == "and stop":
            joint, clause = " ", clause
        if joint == ". ":
            clause = clause[0].upper() + clause[1:]
        text += joint + clause
    return text + "."


def describe_route(
    path: Sequence[Sequence[float]],
    start_yaw: float,
    room_at: Callable[[float, float], Any],
    landmarks: Sequence[Any],
    rng: np.random.Generator,
    goal: Sequence[float] | None = None,
) -> str:
    """:func:`route_events` then :func:`render_instruction`."""
    return render_instruction(route_events(path, start_yaw, room_at, landmarks, goal), rng)
