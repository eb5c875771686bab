"""Occupancy grid, geodesics, collision with sliding, and the shortest-path expert."""

import math

import numpy as np
import pytest

from janus_core.actions import Action
from sim_bridge.navgrid import (
    PATH_SLACK,
    NavGrid,
    ShortestPathExpert,
    forward_vector,
    wrap_angle,
)
from sim_bridge.scene import (
    COLORS,
    WALL_THICKNESS,
    Door,
    Material,
    Room,
    SceneObject,
    build_scene,
    generate_apartment,
)

R = 0.1  # VLN-CE agent radius
HALF_WALL = WALL_THICKNESS / 2


def two_rooms(door: bool = True, box: bool = False):
    """Two 4 x 3 m rooms side by side (x 0..4 and 4..8), a 1 m door at (4, 1.5)."""
    mat = Material("wood", [0.7, 0.5, 0.3])
    wall = Material("plaster", [0.9, 0.9, 0.9])
    rooms = [Room("west", "kitchen", [0.0, 0.0, 4.0, 3.0], mat, wall),
             Room("east", "bedroom", [4.0, 0.0, 8.0, 3.0], mat, wall)]
    doors = [Door(["west", "east"], [4.0, 1.5], 1.0, "z")] if door else []
    objects = []
    if box:  # a 1 x 1 m cabinet in the middle of the west room
        objects.append(SceneObject("cabinet", "grey cabinet", "grey", list(COLORS["grey"]),
                                   [2.0, 0.0, 1.5], [1.0, 1.0, 1.0], 0.0, "west"))
    return build_scene("embedded:test.json", rooms, doors, objects)


@pytest.fixture(scope="module")
def grid():
    return NavGrid(two_rooms())


def test_navigability(grid):
    assert grid.is_navigable([1.0, 0.0, 1.0])
    assert not grid.is_navigable([4.0, 0.0, 0.5])  # inside the shared wall
    assert grid.is_navigable([4.0, 0.0, 1.5])  # in the doorway
    assert not grid.is_navigable([0.1, 0.0, 1.0])  # closer than the radius to the outer wall
    assert grid.is_navigable([HALF_WALL + R + 0.01, 0.0, 1.0])
    assert not grid.is_navigable([-1.0, 0.0, 1.0])  # outside the apartment
    assert not grid.is_navigable([1.0, 1.2, 1.0])  # not on the floor
    assert not grid.is_navigable([1.0, float("nan"), 1.0])
    snapped = grid.snap([0.1, 0.0, 1.0])
    assert snapped is not None and grid.is_navigable(snapped)
    assert abs(snapped[0] - (HALF_WALL + R)) < grid.cell
    assert grid.snap([-5.0, 0.0, 1.0]) is None


def test_geodesic_open_space_is_euclidean(grid):
    a, b = [0.6, 0.0, 0.6], [3.3, 0.0, 2.4]
    d = grid.geodesic_distance(a, b)
    assert d == pytest.approx(math.dist(a, b), rel=0.01)
    assert grid.geodesic_distance(b, b) == pytest.approx(0.0, abs=1e-6)


def test_geodesic_through_the_door(grid):
    # aligned with the door: a straight line through it
    a, b = [1.0, 0.0, 1.5], [7.0, 0.0, 1.5]
    assert grid.geodesic_distance(a, b) == pytest.approx(6.0, rel=0.01)
    # not aligned: the path hugs the lower door jamb, kept the agent radius away from its
    # corners at (4 -+ 0.05, 1.0): two straight legs and a 0.1 m hop past the jamb
    a, b = [1.0, 0.0, 0.4], [7.0, 0.0, 0.4]
    jamb = 2 * math.dist([1.0, 0.4], [4.0 - HALF_WALL, 1.0 + R]) + WALL_THICKNESS
    d = grid.geodesic_distance(a, b)
    assert d == pytest.approx(jamb, rel=0.01)
    assert d > math.dist(a, b) + 0.1
    # the shortest path goes through the doorway
    path = grid.shortest_path(a, b)
    crossing = path[np.argmin(np.abs(path[:, 0] - 4.0))]
    assert 1.0 < crossing[2] < 2.0
    assert np.allclose(path[-1], [b[0], 0.0, b[2]])


def polyline_length(path):
    path = np.asarray(path, float)
    return float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1)))


def min_clearance(g, path, spacing=0.01):
    """The smallest obstacle clearance along a (K, 3) polyline, sampled every ``spacing`` m."""
    pts = []
    for a, b in zip(path[:-1], path[1:]):
        n = max(1, int(math.ceil(math.dist(a, b) / spacing)))
        pts += [a + (b - a) * t for t in np.linspace(0.0, 1.0, n + 1)]
    pts = np.asarray(pts)[:, [0, 2]]
    bx0, bz0, bx1, bz1 = g.bounds
    assert np.all((pts[:, 0] > bx0) & (pts[:, 0] < bx1) & (pts[:, 1] > bz0) & (pts[:, 1] < bz1))
    return float(g.signed_distance(pts).min())


def test_shortest_path_through_the_door_is_taut(grid):
    """Exact geometry, no fast marching in the answer: past the jamb the taut path is the two
    straight legs and the 0.1 m hop of test_geodesic_through_the_door (less a sliver where it
    rounds the radius-dilated corners), so its length is within a cell of that."""
    a, b = [1.0, 0.0, 0.4], [7.0, 0.0, 0.4]
    jamb = 2 * math.dist([1.0, 0.4], [4.0 - HALF_WALL, 1.0 + R]) + WALL_THICKNESS
    path = grid.shortest_path(a, b)
    assert np.allclose(path[0], a) and np.allclose(path[-1], b)
    assert abs(polyline_length(path) - jamb) <= grid.cell
    assert min_clearance(grid, path) >= R - PATH_SLACK - 1e-4
    # in straight-line sight the path is the straight line
    a, b = [0.6, 0.0, 0.6], [3.3, 0.0, 2.4]
    path = grid.shortest_path(a, b)
    assert len(path) == 2 and polyline_length(path) == pytest.approx(math.dist(a, b))


def test_shortest_path_length_agrees_with_the_geodesic():
    """Random pairs in generated apartments: the path's length is the geodesic's within a grid
    cell plus the fast-marching error, and the agent disc fits along all of it.

    The path is taut (string-pulled over the exact obstacle geometry), so it is within about a
    cell of the true shortest path. Fast marching on the 0.05 m grid overestimates that true
    length: it is first order next to obstacles and rounds corners at cell centres (halving the
    cell halves the gap). Measured on 383 pairs (1-15 m) in 20 apartments, length - geodesic is
    -0.26 .. +0.005 m, i.e. never more than one cell + 1.8 % of the geodesic short of it and
    never a cell longer; the bound below allows 2.5 %. (Before string pulling the 8-neighbour
    descent was 0.3 m longer on average, up to 0.85 m.)
    """
    fmm = 0.025  # fast marching's relative overestimate, one-sided (measured up to 1.8 %)
    rng = np.random.default_rng(7)
    n = 0
    for seed in (1, 2, 5):
        g = NavGrid(generate_apartment(seed))
        cell = g.cell
        for _ in range(12):
            a, b = g.sample_navigable_point(rng), g.sample_navigable_point(rng)
            d = g.geodesic_distance(a, b)
            path = g.shortest_path(a, b)
            assert np.allclose(path[0], a) and np.allclose(path[-1], b)
            length = polyline_length(path)
            assert d - cell - fmm * d <= length <= d + cell, (seed, a, b, d, length)
            # 0.1 mm: what NavGrid.segment_clear's samples (an eighth of a cell apart) can miss
            assert min_clearance(g, path) >= g.radius - PATH_SLACK - 1e-4, (seed, a, b)
            n += 1
    assert n == 36


def test_unreachable_is_inf():
    g = NavGrid(two_rooms(door=False))
    assert math.isinf(g.geodesic_distance([1.0, 0.0, 1.5], [7.0, 0.0, 1.5]))
    assert g.geodesic_distance([1.0, 0.0, 1.5], [3.0, 0.0, 1.5]) == pytest.approx(2.0, rel=0.01)
    expert = ShortestPathExpert(g)
    assert expert.next_action([1.0, 0.0, 1.5], 0.0, [7.0, 0.0, 1.5]) == Action.STOP


def test_fields_are_cached(grid):
    goal = [6.0, 0.0, 2.0]
    assert grid.field(goal) is grid.field(list(goal))
    assert grid.field(goal) is not grid.field([6.0, 0.0, 1.0])


def test_free_step_moves_a_full_step(grid):
    p = np.array([2.0, 0.0, 1.5])
    for yaw in np.linspace(-math.pi, math.pi, 9):
        q, collided = grid.try_step(p, 0.25 * forward_vector(yaw))
        assert not collided
        assert math.dist(p, q) == pytest.approx(0.25, abs=1e-9)


def test_head_on_collision_stops_at_the_wall(grid):
    # facing the outer wall at x = 0 (yaw +90 deg looks along -x), 0.3 m from contact
    contact_x = HALF_WALL + R
    p = np.array([contact_x + 0.2, 0.0, 1.0])
    q, collided = grid.try_step(p, 0.25 * forward_vector(math.pi / 2))
    assert collided
    assert q[0] == pytest.approx(contact_x, abs=1e-3)
    assert q[2] == pytest.approx(1.0, abs=1e-6)
    # a second push does not move it
    q2, collided = grid.try_step(q, 0.25 * forward_vector(math.pi / 2))
    assert collided and math.dist(q, q2) < 1e-3


def test_sliding_along_a_wall(grid):
    contact_x = HALF_WALL + R
    p = np.array([contact_x, 0.0, 1.0])
    yaw = math.pi / 2 + math.radians(45)  # 45 degrees into the x = 0 wall, heading +z too
    step = 0.25 * forward_vector(yaw)
    assert step[0] < 0 < step[1]
    q, collided = grid.try_step(p, step, allow_sliding=True)
    assert collided
    assert q[0] == pytest.approx(contact_x, abs=1e-3)
    assert q[2] - p[2] == pytest.approx(step[1], abs=2e-3)  # the tangential part of the step
    q, collided = grid.try_step(p, step, allow_sliding=False)
    assert collided and math.dist(p, q) < 1e-3


def test_sliding_around_a_box():
    g = NavGrid(two_rooms(box=True))
    # walk along +x into the cabinet's west face (x = 1.5), slightly below its centre line
    p = np.array([1.5 - R - 0.1, 0.0, 1.3])
    q, collided = g.try_step(p, [0.25, 0.0])
    assert collided and q[0] == pytest.approx(1.5 - R, abs=1e-3)
    assert g.is_navigable(q)
    d = g.signed_distance(np.array([[q[0], q[2]]]))[0]
    assert d >= R - 1e-6


def test_wrap_angle():
    assert wrap_angle(math.pi) == pytest.approx(math.pi)
    assert wrap_angle(-math.pi) == pytest.approx(math.pi)
    assert wrap_angle(3 * math.pi / 2) == pytest.approx(-math.pi / 2)


def run_expert(g, start, yaw, goal, turn_deg=15.0, max_steps=800):
    """Roll the expert out with the simulator's motion; return (actions, forward length, end)."""
    expert = ShortestPathExpert(g, turn_angle_deg=turn_deg)
    p = np.asarray(start, float)
    actions, length = [], 0.0
    for _ in range(max_steps):
        act = expert.next_action(p, yaw, goal)
        actions.append(act)
        if act == Action.STOP:
            break
        if act == Action.MOVE_FORWARD:
            q, _ = g.try_step(p, 0.25 * forward_vector(yaw))
            length += math.dist(p, q)
            p = q
        else:
            yaw = wrap_angle(yaw + math.radians(turn_deg) * (1 if act == Action.TURN_LEFT else -1))
    return actions, length, p


def turn_events(actions):
    """Runs of turns between forward steps, not counting the initial alignment."""
    s = "".join("F" if a == Action.MOVE_FORWARD else "T" if a != Action.STOP else "" for a in
                actions)
    runs = [r for r in s.split("F") if r]
    return max(0, len(runs) - (1 if s.startswith("T") else 0))


@pytest.mark.parametrize("turn_deg", [15.0, 30.0])
def test_expert_reaches_random_goals(turn_deg):
    """Random start/goal pairs in several apartments: the expert always ends within its stop
    radius (so well within VLN-CE's 3 m), never oscillates, and walks about the geodesic.

    Path length tolerance: the geodesic is a lower bound on any path up to the FMM error (about
    1 % plus a cell); the expert's heading is within half a turn of its aim, which costs at most
    1/cos(7.5 deg) - 1 = 0.9 % (3.5 % at 30 deg), and every re-aim (a run of turns between
    forward steps, at a bend) cuts or overshoots the bend by at most a grid cell or two.
    """
    cell = 0.05
    rng = np.random.default_rng(int(turn_deg))
    n = 0
    for seed in (1, 2, 5):
        g = NavGrid(generate_apartment(seed))
        for _ in range(10):
            a, b = g.sample_navigable_point(rng), g.sample_navigable_point(rng)
            d0 = g.geodesic_distance(a, b)
            actions, length, end = run_expert(g, a, float(rng.uniform(-math.pi, math.pi)), b,
                                              turn_deg)
            d_end = g.geodesic_distance(end, b)
            assert actions[-1] == Action.STOP, (seed, a, b)
            assert d_end <= 0.25 + 1e-6
            for x, y in zip(actions, actions[1:]):  # never left-right or right-left in place
                assert {x, y} != {Action.TURN_LEFT, Action.TURN_RIGHT}
            progress = d0 - d_end
            slack = 1 / math.cos(math.radians(turn_deg / 2)) - 1
            assert length >= progress * 0.99 - 2 * cell
            assert length <= progress * (1 + 0.01 + slack) + 2 * cell * (turn_events(actions) + 1)
            n += 1
    assert n == 30


def test_expert_turns_towards_the_goal(grid):
    p = [2.0, 0.0, 1.5]
    # goal straight ahead (yaw 0 looks along -z)
    assert ShortestPathExpert(grid).next_action(p, 0.0, [2.0, 0.0, 0.5]) == Action.MOVE_FORWARD
    # goal to the left (-x when facing -z): TURN_LEFT increases yaw towards +90 deg (-x)
    assert ShortestPathExpert(grid).next_action(p, 0.0, [0.6, 0.0, 1.5]) == Action.TURN_LEFT
    assert ShortestPathExpert(grid).next_action(p, 0.0, [3.5, 0.0, 1.5]) == Action.TURN_RIGHT
    assert ShortestPathExpert(grid).next_action(p, 0.0, [2.0, 0.0, 1.6]) == Action.STOP


def test_expert_gets_out_of_a_corner(grid):
    """Facing into a corner with the goal behind the wall: it turns, then makes progress."""
    corner = np.array([HALF_WALL + R + 0.01, 0.0, HALF_WALL + R + 0.01])
    actions, _, end = run_expert(grid, corner, math.radians(135), [7.0, 0.0, 2.5])
    assert actions[-1] == Action.STOP
    assert grid.geodesic_distance(end, [7.0, 0.0, 2.5]) <= 0.25 + 1e-6
    assert len(actions) < 80


def test_all_rooms_reachable_in_generated_apartments():
    for seed in range(6):
        sc = generate_apartment(seed)
        g = NavGrid(sc)
        main = g.largest_component()
        for room in sc.rooms:
            x0, z0, x1, z1 = room.interior
            i0, j0 = g.cell_of(x0, z0)
            i1, j1 = g.cell_of(x1, z1)
            nav = g.navigable[i0:i1, j0:j1]
            reach = main[i0:i1, j0:j1]
            assert reach.sum() >= 0.9 * nav.sum(), (seed, room.name)
            assert reach.sum() > 0.25 * nav.size, (seed, room.name)


def test_goal_on_a_one_cell_island_is_reachable_only_there():
    """A goal whose disc covers its whole island (no zero level set for fast marching)."""
    g = NavGrid(two_rooms())
    g.navigable = np.zeros_like(g.navigable)
    i, j = 30, 30
    g.navigable[i, j] = True  # one isolated navigable cell
    x, z = g.cell_center(i, j)
    assert g.geodesic_distance([x, 0.0, z], [x, 0.0, z]) < g.cell
    assert math.isinf(g.geodesic_distance([1.0, 0.0, 1.0], [x, 0.0, z]))
