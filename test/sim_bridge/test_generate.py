import gzip
import json
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from janus_core.actions import Action
from sim_bridge.episodes import load_split, read_split_file
from sim_bridge.generate import (
    GenerateConfig,
    GenerationError,
    generate_dataset,
    main,
    parse_splits,
    scene_seeds,
    split_file_names,
)
from sim_bridge.instructions import (
    render_instruction,
    room_label,
    route_events,
    simplify,
    turn_direction,
)

# ---- instructions (pure) -------------------------------------------------------------------------

# an L-shaped route: 5 m along -z (ahead at yaw 0), then a left turn and 4 m along -x
L_PATH = [[0, 0, -0.25 * i] for i in range(21)] + [[-0.25 * i, 0, -5] for i in range(1, 17)]


def l_room_at(x, z):
    return NS(name="bedroom 1", type="bedroom") if z > -3 else NS(name="hallway", type="hallway")


L_LANDMARKS = [
    NS(name="lamp", room="hallway", position=[-4, 0, -5.5]),
    NS(name="green sofa", room="bedroom 1", position=[0.8, 0, -2]),
    NS(name="red chair", room="kitchen", position=[-0.8, 0, -1.0]),  # close, but behind a wall
]


def test_route_events_l_path():
    ev = route_events(L_PATH, start_yaw=math.pi / 2, room_at=l_room_at, landmarks=L_LANDMARKS)
    kinds = [(e.kind, e.direction or e.room or e.landmark) for e in ev if e.kind != "walk"]
    # facing -x at the start, the route goes along -z: that is to the agent's right
    assert kinds == [("start", "right"), ("pass", "green sofa"), ("enter", "hallway"),
                     ("turn", "left"), ("stop", "hallway")]
    passed = next(e for e in ev if e.kind == "pass")
    assert passed.side == "right"          # the sofa is at +x while walking along -z
    assert ev[0].room == "bedroom with the green sofa"  # "bedroom 1" is told apart by a landmark
    assert ev[-1].landmark == "lamp"
    ahead = route_events(L_PATH, start_yaw=0.0, room_at=l_room_at, landmarks=[])
    assert ahead[0].direction is None and ahead[-1].landmark is None


def test_render_varies_and_carries_the_route():
    ev = route_events(L_PATH, start_yaw=math.pi / 2, room_at=l_room_at, landmarks=L_LANDMARKS)
    texts = {render_instruction(ev, np.random.default_rng(s)) for s in range(12)}
    assert len(texts) >= 8                  # many phrasings of one route
    for t in texts:
        assert t[0].isupper() and t.endswith(".")
        assert "right" in t and "left" in t and "hallway" in t and "lamp" in t
        assert "red chair" not in t
    # a mirrored route says the opposite turns
    mirrored = [[-x, y, z] for x, y, z in L_PATH]
    ev2 = route_events(mirrored, start_yaw=-math.pi / 2, room_at=l_room_at, landmarks=[])
    assert [e.direction for e in ev2 if e.kind in ("start", "turn")] == ["left", "right"]


def test_turn_thresholds_and_simplify():
    assert turn_direction(math.radians(10)) is None
    assert turn_direction(math.radians(45)) == "slight_left"
    assert turn_direction(math.radians(-90)) == "right"
    assert turn_direction(math.radians(170)) == "around"
    pts = np.array([[0, 0], [1, 0.01], [2, 0], [2, 1], [2, 2]], float)
    assert simplify(pts) == [0, 2, 4]
    assert room_label(None) is None
    assert room_label(NS(name="living_room", type="x")) == "living room"


# ---- splits / scenes -----------------------------------------------------------------------------

def test_parse_splits_and_scene_seeds():
    assert parse_splits("train:20, val_unseen:10") == {"train": 20, "val_unseen": 10}
    for bad in ("train", "train:x", ""):
        with pytest.raises(GenerationError):
            parse_splits(bad)
    train, seen, unseen = (set(scene_seeds(s, 50, 3)) for s in ("train", "val_seen", "val_unseen"))
    assert train == seen and not train & unseen
    assert not set(scene_seeds("test", 50, 3)) & (train | unseen)
    assert not set(scene_seeds("train", 50, 4)) & train   # another seed, other apartments
    assert split_file_names("val_unseen", "rxr") == ("val_unseen_guide.json.gz",
                                                     "val_unseen_guide_gt.json.gz")
    with pytest.raises(GenerationError, match="min_geodesic"):
        GenerateConfig(min_geodesic=5, max_geodesic=4)


# ---- end to end with the embedded simulator ------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    cfg = GenerateConfig(splits={"train": 6, "val_seen": 3, "val_unseen": 4}, seed=0,
                         episodes_per_scene=3, instructions_per_path=1)
    paths = generate_dataset(out, cfg)
    return out, paths


def test_official_layout_and_gt(dataset):
    out, paths = dataset
    for split in ("train", "val_seen", "val_unseen"):
        assert paths[split] == out / split / f"{split}.json.gz"
        assert (out / split / f"{split}_gt.json.gz").exists()
    raw = json.loads(gzip.decompress(paths["train"].read_bytes()))
    assert set(raw) == {"episodes", "instruction_vocab"}
    ep0 = raw["episodes"][0]
    assert set(ep0) == {"episode_id", "trajectory_id", "scene_id", "start_position",
                        "start_rotation", "info", "goals", "instruction", "reference_path"}
    assert set(ep0["instruction"]) == {"instruction_text", "instruction_tokens"}
    stats = json.loads((out / "generation.json").read_text())["splits"]
    assert stats["train"]["episodes"] == 6


def test_episodes_are_valid_expert_routes(dataset):
    out, paths = dataset
    from sim_bridge.backends import make_simulator
    from sim_bridge.simulator import SimConfig

    sim = make_simulator(SimConfig(render=False))
    try:
        for split, path in paths.items():
            eps = load_split(path, gt_path=out / split / f"{split}_gt.json.gz")
            for ep in eps:
                assert 5.0 <= ep.geodesic_distance <= 20.0
                assert ep.gt_actions[-1] == int(Action.STOP)
                assert ep.gt_forward_steps == ep.gt_actions.count(int(Action.MOVE_FORWARD))
                assert ep.gt_locations[0] == pytest.approx(ep.start_position, abs=1e-4)
                assert ep.reference_path[0] == pytest.approx(ep.start_position, abs=1e-3)
                assert ep.reference_path[-1] == pytest.approx(ep.goal_position, abs=1e-3)
                assert 2 <= len(ep.reference_path) < len(ep.gt_locations)
                # replaying the ground-truth actions ends where the gt says, next to the goal
                sim.reset(ep)
                for a in ep.gt_actions[:-1]:
                    sim.step(a)
                assert sim.position.tolist() == pytest.approx(ep.gt_locations[-1], abs=1e-4)
                assert sim.distance_to_goal() <= 0.5
                assert len(ep.instruction.split()) >= 5
    finally:
        sim.close()


def _length(path):
    path = np.asarray(path, float)
    return float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1)))


def _turn_events(actions):
    """Runs of turns between forward steps (re-aims at bends), not the initial alignment."""
    s = "".join("F" if a == int(Action.MOVE_FORWARD) else "T" if a != int(Action.STOP) else ""
                for a in actions)
    return max(0, len([r for r in s.split("F") if r]) - (1 if s.startswith("T") else 0))


def test_geodesic_reference_path_and_expert_path_agree(dataset):
    """What an episode stores is consistent: info.geodesic_distance is the simulator's geodesic
    (what the evaluator recomputes); reference_path is the taut shortest path; the _gt path is
    the expert's executed route.

    reference_path vs geodesic: the reference is NavGrid.shortest_path (taut, within a cell of
    the true shortest path), and fast marching overestimates the true length by up to ~2 % on
    these apartments (see test_navgrid.test_shortest_path_length_agrees_with_the_geodesic), so
    geodesic - cell - 2.5 % <= length <= geodesic + cell.

    Expert path vs geodesic (an honest tolerance, not a grid cell): the expert walks 0.25 m
    steps on 15-degree headings and stops as soon as it is within expert_stop_radius (0.25 m
    geodesic) of the goal. So the progress it has to account for is geodesic - d_end. It cannot
    beat the true shortest path to where it stopped: length >= progress - cell - 2.5 % (the
    fast-marching overestimate). Its heading is within half a turn (7.5 degrees) of its aim,
    costing at most 1/cos(7.5 deg) - 1 = 0.86 %; every re-aim at a bend cuts or overshoots the
    corner by at most two cells; fast marching adds its 1 %: length <= progress * (1 + 0.01 +
    0.0086) + 2 cells per bend (as in test_navgrid.test_expert_reaches_random_goals).
    """
    out, paths = dataset
    from sim_bridge.backends import make_simulator
    from sim_bridge.navgrid import PATH_SLACK
    from sim_bridge.simulator import SimConfig

    sim = make_simulator(SimConfig(render=False))
    fmm = 0.025
    heading = 1 / math.cos(math.radians(15.0 / 2)) - 1
    try:
        for split, path in paths.items():
            for ep in load_split(path, gt_path=out / split / f"{split}_gt.json.gz"):
                sim.reset(ep)
                grid = sim.navgrid
                cell = grid.cell
                d = ep.geodesic_distance
                where = (split, ep.episode_id)
                assert d == pytest.approx(
                    sim.geodesic_distance(ep.start_position, ep.goal_position), abs=1e-3), where
                ref = np.asarray(ep.reference_path)
                shortest = sim.shortest_path(ep.start_position, ep.goal_position)
                assert _length(ref) == pytest.approx(_length(shortest), abs=1e-3), where
                assert d - cell - fmm * d <= _length(ref) <= d + cell, (where, d, _length(ref))
                # the reference never cuts through a wall: the agent disc fits along all of it
                # (PATH_SLACK, plus the stored 4-decimal rounding)
                for a, b in zip(ref[:-1], ref[1:]):
                    pts = a + (b - a) * np.linspace(0, 1, 2 + int(math.dist(a, b) / 0.01))[:, None]
                    assert grid.signed_distance(pts[:, [0, 2]]).min() >= (
                        grid.radius - PATH_SLACK - 2e-4), where
                # the expert's executed path
                walked = _length(ep.gt_locations)
                d_end = sim.geodesic_distance(ep.gt_locations[-1], ep.goal_position)
                assert d_end <= sim.config.expert_stop_radius + 1e-6, where
                progress = d - d_end
                bends = _turn_events(ep.gt_actions)
                assert walked >= progress - cell - fmm * d, (where, walked, progress)
                assert walked <= progress * (1 + 0.01 + heading) + 2 * cell * (bends + 1), (
                    where, walked, progress, bends)
    finally:
        sim.close()


def test_scene_split_rules(dataset):
    out, paths = dataset
    eps = {s: load_split(p) for s, p in paths.items()}
    scenes = {s: {e.scene_id for e in v} for s, v in eps.items()}
    assert scenes["val_seen"] <= scenes["train"]
    assert not scenes["val_unseen"] & scenes["train"]
    starts = {s: {tuple(e.start_position) for e in v} for s, v in eps.items()}
    assert not starts["val_seen"] & starts["train"]   # new episodes in the seen apartments
    assert len({e.instruction for e in eps["train"]}) == len(eps["train"])


def test_cli_rxr_and_determinism(tmp_path):
    args = ["--splits", "val_unseen:2", "--seed", "5", "--format", "rxr",
            "--instructions-per-path", "2"]
    assert main(["--out", str(tmp_path / "a"), *args]) == 0
    assert main(["--out", str(tmp_path / "b"), *args]) == 0
    a = tmp_path / "a" / "val_unseen" / "val_unseen_guide.json.gz"
    b = tmp_path / "b" / "val_unseen" / "val_unseen_guide.json.gz"
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a/val_unseen/val_unseen_guide_gt.json.gz").read_bytes() == (
        tmp_path / "b/val_unseen/val_unseen_guide_gt.json.gz").read_bytes()
    split = read_split_file(a)
    assert split.format == "rxr" and split.instruction_vocab is None
    e1, e2 = split.episodes
    assert e1.language == "en-US" and e1.instruction_id == "1"
    assert e1.trajectory_id == e2.trajectory_id      # two instructions for one path
    assert e1.start_position == e2.start_position
    assert main(["--out", str(tmp_path / "c"), "--splits", "bad"]) == 2
    # an existing split is kept unless --force (evaluations may be tied to it)
    assert main(["--out", str(tmp_path / "a"), *args]) == 2
    assert a.read_bytes() == b.read_bytes()
    assert main(["--out", str(tmp_path / "a"), *args[:3], "6", *args[4:], "--force"]) == 0
    assert a.read_bytes() != b.read_bytes()
