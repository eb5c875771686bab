import math

import numpy as np
import pytest

from sim_bridge.metrics import (
    EpisodeMetrics,
    aggregate,
    dedup_consecutive,
    dtw_distance,
    format_table,
    ndtw,
    spl,
)


def naive_dtw(p, q):
    n, m = len(p), len(q)
    c = [[math.inf] * (m + 1) for _ in range(n + 1)]
    c[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d = math.dist(p[i - 1], q[j - 1])
            c[i][j] = d + min(c[i - 1][j], c[i][j - 1], c[i - 1][j - 1])
    return c[n][m]


def test_dtw_hand_computed():
    path = [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    ref = [(0, 0, 0), (2, 0, 0)]
    # cost matrix rows [0,2],[1,1],[2,0]; best warp 0 + 1 + 0 = 1
    assert dtw_distance(path, ref) == pytest.approx(1.0)
    assert ndtw(path, ref) == pytest.approx(math.exp(-1.0 / (2 * 3.0)))
    assert dtw_distance(ref, ref) == 0.0 and ndtw(ref, ref) == 1.0
    # a path 1 m beside a 4-point reference: every matched pair costs 1
    ref4 = [(0, 0, z) for z in (0, -1, -2, -3)]
    side = [(1, 0, z) for z in (0, -1, -2, -3)]
    assert dtw_distance(side, ref4) == pytest.approx(4.0)
    assert ndtw(side, ref4) == pytest.approx(math.exp(-4.0 / 12.0))
    # one point against many: sum of distances
    assert dtw_distance([(0, 0, 0)], ref4) == pytest.approx(0 + 1 + 2 + 3)


def test_dtw_matches_naive_on_random_paths():
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (5, 3), (17, 40), (60, 9)]:
        p = np.cumsum(rng.normal(size=(n, 3)), 0)
        q = np.cumsum(rng.normal(size=(m, 3)), 0)
        assert dtw_distance(p, q) == pytest.approx(naive_dtw(p.tolist(), q.tolist()), rel=1e-9)


def test_spl():
    assert spl(1.0, 5.0, 8.0) == pytest.approx(0.625)
    assert spl(1.0, 5.0, 3.0) == 1.0
    assert spl(0.0, 5.0, 5.0) == 0.0
    assert spl(1.0, 0.0, 0.0) == 1.0


def run(steps, start_dtg=5.0, geo=5.0, reference=None):
    m = EpisodeMetrics(start_position=[0, 0, 0], start_distance_to_goal=start_dtg,
                       geodesic_start=geo, reference=reference)
    for pos, d, coll, stop in steps:
        m.update(pos, d, collided=coll, stop=stop)
    return m.result()


def test_episode_success_straight():
    ref = [[0, 0, 0], [0, 0, -1], [0, 0, -2], [0, 0, -3]]
    r = run([([0, 0, -1], 4.0, False, False),
             ([0, 0, -1], 4.0, False, False),   # a turn: same position
             ([0, 0, -2], 3.0, True, False),
             ([0, 0, -3], 2.5, False, False),
             ([0, 0, -3], 2.5, False, True)],   # STOP
            reference=ref)
    assert r["ne"] == 2.5 and r["sr"] == 1.0 and r["os"] == 1.0
    assert r["path_length"] == pytest.approx(3.0)
    assert r["spl"] == pytest.approx(1.0)          # 5 / max(3, 5)
    assert r["steps"] == 5 and r["collisions"] == 1
    assert r["ndtw"] == pytest.approx(1.0)          # duplicates dropped, same points as gt
    assert r["sdtw"] == pytest.approx(1.0)
    assert r["oracle_ne"] == 2.5 and r["stop_called"] is True


def test_episode_detour_spl_and_sdtw():
    ref = [[0, 0, 0], [0, 0, -4]]
    path = [([2, 0, 0], 6.0, False, False), ([2, 0, -4], 2.0, False, False),
            ([0, 0, -4], 1.0, False, False), ([0, 0, -4], 1.0, False, True)]
    r = run(path, reference=ref)
    assert r["path_length"] == pytest.approx(8.0)
    assert r["spl"] == pytest.approx(5.0 / 8.0)
    # positions (0,0,0),(2,0,0),(2,0,-4),(0,0,-4) vs ref: 0 + 2 + 2 + 0 = 4
    assert r["ndtw"] == pytest.approx(math.exp(-4.0 / (2 * 3.0)))
    assert r["sdtw"] == pytest.approx(r["ndtw"])


def test_success_is_strict_and_requires_stop():
    at_three = run([([0, 0, -2], 3.0, False, False), ([0, 0, -2], 3.0, False, True)])
    assert at_three["sr"] == 0.0 and at_three["os"] == 0.0 and at_three["spl"] == 0.0
    no_stop = run([([0, 0, -4], 1.0, False, False)], reference=[[0, 0, 0], [0, 0, -4]])
    assert no_stop["sr"] == 0.0 and no_stop["os"] == 1.0 and no_stop["spl"] == 0.0
    assert no_stop["sdtw"] == 0.0 and no_stop["ndtw"] == pytest.approx(1.0)
    assert no_stop["stop_called"] is False
    # oracle success counts the start; no reference -> nDTW None
    near = run([([0, 0, 0], 2.0, False, True)], start_dtg=2.0, geo=2.0)
    assert near["os"] == 1.0 and near["sr"] == 1.0 and near["ndtw"] is None
    assert near["spl"] == 1.0


def test_update_after_stop_raises():
    m = EpisodeMetrics([0, 0, 0], 1.0, 1.0)
    m.update([0, 0, 0], 1.0, stop=True)
    with pytest.raises(RuntimeError):
        m.update([0, 0, 0], 1.0)


def test_dedup():
    assert dedup_consecutive([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]]) == [
        [0, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_aggregate_and_table():
    records = [
        {"status": "ok", "metrics": {"ne": 1.0, "sr": 1.0, "os": 1.0, "spl": 0.5, "ndtw": 0.8,
                                     "sdtw": 0.8, "path_length": 10, "steps": 40,
                                     "collisions": 0}},
        {"status": "ok", "metrics": {"ne": 5.0, "sr": 0.0, "os": 1.0, "spl": float("nan"),
                                     "ndtw": None, "sdtw": None, "path_length": 6, "steps": 20,
                                     "collisions": 2}},
        {"status": "error", "error": "boom"},
    ]
    s = aggregate(records)
    assert s["episodes"] == 2 and s["errors"] == 1
    m = s["metrics"]
    assert m["ne"] == 3.0 and m["sr"] == 0.5 and m["os"] == 1.0
    assert m["spl"] == 0.5 and s["skipped"]["spl"] == 1   # NaN left out, counted
    assert m["ndtw"] == pytest.approx(0.8) and m["steps"] == 30.0 and m["collisions"] == 1.0
    table = format_table(s, title="t")
    assert "| 2 | 3.00 | 100.0 | 50.0 | 50.0 | 80.0 | 80.0 | 8.00 | 30.00 | 1.00 |" in table
    assert "1 episode(s) failed" in table
    assert aggregate([])["metrics"]["sr"] is None


def test_unreachable_goal_gives_no_nan():
    assert spl(0.0, math.inf, 4.0) == 0.0
    r = run([([0, 0, -1], math.inf, False, True)], start_dtg=math.inf, geo=math.inf)
    assert r["spl"] == 0.0 and r["sr"] == 0.0 and r["ne"] == math.inf
    s = aggregate([{"status": "ok", "metrics": r}])
    assert s["metrics"]["ne"] is None and s["skipped"]["ne"] == 1 and s["metrics"]["spl"] == 0.0
