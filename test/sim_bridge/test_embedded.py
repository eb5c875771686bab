"""The embedded simulator behind the Simulator interface: motion, observations, bad input."""

import math
import re

import numpy as np
import pytest

from janus_core.actions import Action
from janus_core.interface import Observation
from sim_bridge.backends import make_simulator
from sim_bridge.embedded import EmbeddedSimulator
from sim_bridge.episodes import Episode, Goal, load_split, save_split
from sim_bridge.renderer import RendererUnavailableError, create_context
from sim_bridge.scene import WALL_THICKNESS, generate_apartment
from sim_bridge.simulator import (
    SimConfig,
    SimObservation,
    TopDownMap,
    quaternion_to_yaw,
    yaw_to_quaternion,
)

SCENE = "embedded:apt_00003"


def _egl_reason():
    try:
        create_context().release()
    except RendererUnavailableError as exc:
        return str(exc)
    return None


_NO_EGL = _egl_reason()
needs_egl = pytest.mark.skipif(_NO_EGL is not None, reason=f"no EGL: {_NO_EGL}")


def episode(start, goal, yaw=0.0, scene=SCENE, eid="ep1"):
    return Episode(episode_id=eid, scene_id=scene, start_position=[float(v) for v in start],
                   start_rotation=yaw_to_quaternion(yaw), goals=[Goal([float(v) for v in goal])],
                   instruction="walk")


@pytest.fixture(scope="module")
def blind():
    sim = make_simulator(SimConfig(render=False))
    yield sim
    sim.close()


def open_spot(sim, rng, clearance=0.6):
    """A navigable point with ``clearance`` metres of free floor around it."""
    grid = sim.navgrid
    for _ in range(500):
        p = grid.sample_navigable_point(rng)
        if grid.signed_distance(np.array([[p[0], p[2]]]))[0] > clearance:
            return p
    raise AssertionError("no open spot")


def test_make_simulator_and_config():
    sim = make_simulator({"render": False, "turn_angle": 30})
    assert isinstance(sim, EmbeddedSimulator) and sim.config.turn_angle == 30
    sim.close()
    with pytest.raises(ValueError, match="unknown simulator backend 'unity'; known: "
                       r"\['embedded', 'habitat', 'auto'\]"):
        make_simulator(SimConfig(backend="unity"))  # the registry knows the names
    with pytest.raises(ValueError, match="backend"):
        SimConfig(backend="")
    with pytest.raises(ValueError, match="width"):
        SimConfig(width=0)
    with pytest.raises(ValueError, match="depth_min"):
        SimConfig(depth_min=5, depth_max=1)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['hfov'\]"):
        SimConfig.from_dict({"hfov": 90})
    assert SimConfig.from_dict(SimConfig(turn_angle=30).to_dict()) == SimConfig(turn_angle=30)


def test_quaternions():
    for yaw in (0.0, 0.5, -2.0, math.pi):
        assert quaternion_to_yaw(yaw_to_quaternion(yaw)) == pytest.approx(
            math.atan2(math.sin(yaw), math.cos(yaw)))
    with pytest.raises(ValueError):
        quaternion_to_yaw([0, 0, 0, 0])


def test_motion_model(blind):
    rng = np.random.default_rng(0)
    blind.load_scene(SCENE)
    start = open_spot(blind, rng)
    obs = blind.reset(episode(start, start, yaw=0.0))
    assert obs.rgb.shape == (0, 0, 3) and obs.depth.shape == (0, 0)  # blind
    assert obs.position == pytest.approx([start[0], 0.0, start[2]])
    # forward at yaw 0 moves along -z by 0.25
    obs = blind.step(Action.MOVE_FORWARD)
    assert not obs.collided
    assert obs.position == pytest.approx([start[0], 0.0, start[2] - 0.25])
    # TURN_LEFT increases yaw by 15 degrees; then forward goes towards -x
    blind.step(Action.TURN_LEFT)
    assert blind.yaw == pytest.approx(math.radians(15))
    for _ in range(5):
        blind.step(Action.TURN_LEFT)
    assert blind.yaw == pytest.approx(math.pi / 2)
    before = blind.position
    blind.step(Action.MOVE_FORWARD)
    assert blind.position - before == pytest.approx([-0.25, 0.0, 0.0], abs=1e-9)
    blind.step(Action.TURN_RIGHT)
    assert blind.yaw == pytest.approx(math.radians(75))
    # STOP does not move; ints work too
    here = blind.position
    obs = blind.step(0)
    assert obs.position == pytest.approx(here) and blind.steps == 10
    with pytest.raises(ValueError, match="not an action"):
        blind.step(7)


def test_turn_angle_30():
    sim = EmbeddedSimulator(SimConfig(render=False, turn_angle=30))
    sim.load_scene(SCENE)
    p = open_spot(sim, np.random.default_rng(1))
    sim.reset(episode(p, p, yaw=0.2))
    sim.step(Action.TURN_RIGHT)
    assert sim.yaw == pytest.approx(0.2 - math.radians(30))
    assert sim.rotation == pytest.approx(yaw_to_quaternion(0.2 - math.radians(30)))


def test_collision_and_sliding_through_the_simulator(blind):
    blind.load_scene(SCENE)
    sc = blind.scene
    room = max(sc.rooms, key=lambda r: r.area)
    x0, z0, x1, z1 = room.interior
    # walk north (-z) from the room's middle until a wall or furniture stops the agent
    p = np.array([0.5 * (x0 + x1), 0.0, 0.5 * (z0 + z1)])
    p = blind.navgrid.snap(p)
    blind.reset(episode(p, p, yaw=0.0))
    collided = False
    for _ in range(60):
        obs = blind.step(Action.MOVE_FORWARD)
        if obs.collided:
            collided = True
            break
    assert collided
    assert blind.is_navigable(blind.position)
    clearance = blind.navgrid.signed_distance(np.array([[blind.position[0], blind.position[2]]]))
    assert clearance[0] >= 0.1 - 1e-6


def test_expert_episode_reaches_the_goal(blind):
    rng = np.random.default_rng(5)
    blind.load_scene(SCENE)
    for k in range(4):
        a = blind.sample_navigable_point(rng)
        b = blind.sample_navigable_point(rng)
        blind.reset(episode(a, b, yaw=float(rng.uniform(-3, 3)), eid=f"e{k}"))
        start_dtg = blind.distance_to_goal()
        assert start_dtg == pytest.approx(blind.geodesic_distance(a, b))
        for _ in range(500):
            action = blind.expert_action()
            blind.step(action)
            if action == Action.STOP:
                break
        assert action == Action.STOP
        assert blind.distance_to_goal() <= blind.config.expert_stop_radius + 1e-6
        assert blind.distance_to_goal() < blind.config.success_distance


def test_bad_episodes(blind, tmp_path):
    rng = np.random.default_rng(2)
    blind.load_scene(SCENE)
    ok = blind.sample_navigable_point(rng)
    with pytest.raises(ValueError, match=r"episode ep1: field scene_id 'mp3d/x/x.glb'"):
        blind.reset(episode(ok, ok, scene="mp3d/x/x.glb"))
    with pytest.raises(ValueError, match=r"episode ep1: field scene_id .*does not exist"):
        blind.reset(episode(ok, ok, scene="embedded:nowhere.json"))
    with pytest.raises(ValueError, match=r"episode ep1: field scene_id"):
        blind.reset(episode(ok, ok, scene="embedded:apt_x"))
    bx0, bz0, bx1, bz1 = blind.scene.bounds
    mids = [(0.5 * (w.rect[0] + w.rect[2]), 0.5 * (w.rect[1] + w.rect[3]))
            for w in blind.scene.walls if w.y0 == 0.0]
    x, z = next((x, z) for x, z in mids if bx0 + 0.5 < x < bx1 - 0.5 and bz0 + 0.5 < z < bz1 - 0.5)
    inside_wall = [x, 0.0, z]  # the middle of an interior wall
    with pytest.raises(ValueError, match=r"episode ep1: field start_position .*inside a wall"):
        blind.reset(episode(inside_wall, ok))
    with pytest.raises(ValueError, match=r"field start_position .*outside the apartment"):
        blind.reset(episode([100.0, 0.0, 0.0], ok))
    with pytest.raises(ValueError, match=r"field start_position .*not on the floor"):
        blind.reset(episode([ok[0], 2.0, ok[2]], ok))
    with pytest.raises(ValueError, match=r"field start_position: expected 3 finite numbers"):
        blind.reset(episode([1.0, 2.0], ok))
    with pytest.raises(ValueError, match=r"field goals\[0\]\.position .*more than 1 m"):
        blind.reset(episode(ok, [100.0, 0.0, 100.0]))
    bad_rot = episode(ok, ok)
    bad_rot.start_rotation = [0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"field start_rotation"):
        blind.reset(bad_rot)
    no_goal = episode(ok, ok)
    no_goal.goals = []
    with pytest.raises(ValueError, match=r"field goals is empty"):
        blind.reset(no_goal)
    fresh = EmbeddedSimulator(SimConfig(render=False))
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step(Action.STOP)
    with pytest.raises(RuntimeError, match="reset"):
        fresh.expert_action()


def test_bad_episodes_from_a_file_name_the_file(blind, tmp_path):
    """Episodes read from a split file: the simulator's refusal names the file, the episode and
    the field (an unknown scene id, a scene file that is not there, a start inside a wall)."""
    rng = np.random.default_rng(4)
    blind.load_scene(SCENE)
    ok = blind.sample_navigable_point(rng)
    bx0, bz0, bx1, bz1 = blind.scene.bounds
    mids = [(0.5 * (w.rect[0] + w.rect[2]), 0.5 * (w.rect[1] + w.rect[3]))
            for w in blind.scene.walls if w.y0 == 0.0]
    x, z = next((x, z) for x, z in mids if bx0 + 0.5 < x < bx1 - 0.5 and bz0 + 0.5 < z < bz1 - 0.5)
    split = tmp_path / "val_bad.json.gz"
    save_split(split, [episode(ok, ok, scene="embedded:apt_x", eid="u1"),
                       episode(ok, ok, scene="embedded:nowhere.json", eid="u2"),
                       episode([x, 0.0, z], ok, eid="w1"),
                       episode(ok, ok, eid="fine")])
    eps = {ep.episode_id: ep for ep in load_split(split)}
    where = re.escape(str(split))
    with pytest.raises(ValueError, match=rf"^{where}: episode u1: field scene_id 'embedded:apt_x'"):
        blind.reset(eps["u1"])
    with pytest.raises(ValueError, match=rf"^{where}: episode u2: field scene_id .*does not exist"):
        blind.reset(eps["u2"])
    with pytest.raises(ValueError,
                       match=rf"^{where}: episode w1: field start_position .*inside a wall"):
        blind.reset(eps["w1"])
    blind.reset(eps["fine"])
    # an episode built in code has no file: the message starts with the episode
    with pytest.raises(ValueError, match=r"^episode w1: field start_position"):
        blind.reset(episode([x, 0.0, z], ok, eid="w1"))


def test_scene_from_json_file(tmp_path):
    generate_apartment(9).save(tmp_path / "apt9.json")
    sim = EmbeddedSimulator(SimConfig(render=False, scenes_dir=str(tmp_path)))
    spec = sim.load_scene("embedded:apt9.json")
    assert spec.seed == 9
    p = sim.sample_navigable_point(np.random.default_rng(0))
    obs = sim.reset(episode(p, p, scene="embedded:apt9.json"))
    assert sim.is_navigable(obs.position)


def test_teleport_and_top_down_map(blind):
    rng = np.random.default_rng(3)
    blind.load_scene(SCENE)
    p = blind.sample_navigable_point(rng)
    blind.reset(episode(p, p))
    q = blind.sample_navigable_point(rng)
    obs = blind.set_agent_state(q, 1.0)
    assert obs.position == pytest.approx(q) and obs.yaw == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not navigable"):
        blind.set_agent_state([100.0, 0.0, 0.0], 0.0)
    tdm = blind.top_down_map()
    assert isinstance(tdm, TopDownMap)
    (r, c), = tdm.to_pixel([q])
    assert tdm.navigable[r, c]
    back = tdm.to_world([[r, c]])[0]
    assert abs(back[0] - q[0]) <= tdm.meters_per_pixel and abs(back[1] - q[2]) <= \
        tdm.meters_per_pixel
    img = tdm.draw(path=[p, q], agent=(q, 1.0), goal=p, scale=2)
    assert img.shape == (tdm.image.shape[0] * 2, tdm.image.shape[1] * 2, 3)


@needs_egl
def test_rendered_observations():
    cfg = SimConfig(width=80, height=60, depth_max=2.0, furniture="shapes")
    with make_simulator(cfg) as sim:
        sim.load_scene(SCENE)
        p = open_spot(sim, np.random.default_rng(4))
        obs = sim.reset(episode(p, p))
        assert isinstance(obs, SimObservation)
        assert obs.rgb.shape == (60, 80, 3) and obs.rgb.dtype == np.uint8
        assert obs.depth.shape == (60, 80) and obs.depth.dtype == np.float32
        assert obs.depth.max() <= 2.0 and obs.depth.min() >= 0.0
        assert sim.observe() is obs  # cached per pose
        turned = sim.step(Action.TURN_LEFT)
        assert not np.array_equal(turned.rgb, obs.rgb)
        same = sim.step(Action.STOP)
        assert np.array_equal(same.rgb, turned.rgb)
        pol = same.to_observation(stamp=1.5)
        assert isinstance(pol, Observation) and pol.pose[3] == pytest.approx(sim.yaw)
        # the camera is 1.25 m up: looking at a wall from 0.5 m, the centre pixel says so
        sim.set_agent_state(p, 0.0)
        for _ in range(40):
            if sim.step(Action.MOVE_FORWARD).collided:
                break
        rgb, depth = sim.render_at(sim.position, sim.yaw)
        assert depth[30, 40] >= 0.1 - 1e-3  # never closer than the agent radius
        assert depth[30, 40] < 1.0 + WALL_THICKNESS


@needs_egl
def test_camera_height_and_hfov_in_depth(tmp_path):
    """In an empty room the floor's depth along the bottom row follows camera_height and hfov."""
    from sim_bridge.scene import Material, Room, build_scene

    room = Room("hall", "hallway", [0.0, 0.0, 8.0, 8.0], Material("wood", [0.7, 0.5, 0.3]),
                Material("plaster", [0.9, 0.9, 0.9]))
    build_scene("embedded:empty.json", [room], []).save(tmp_path / "empty.json")
    for cam_h, hfov in ((1.25, 79.0), (0.9, 60.0)):
        cfg = SimConfig(width=64, height=48, hfov_deg=hfov, camera_height=cam_h,
                        scenes_dir=str(tmp_path))
        with make_simulator(cfg) as sim:
            obs = sim.reset(episode([4.0, 0.0, 6.0], [4.0, 0.0, 2.0], scene="embedded:empty.json"))
            vfov = 2 * math.atan(math.tan(math.radians(hfov) / 2) * 48 / 64)
            slope = (47.5 / 48 * 2 - 1) * math.tan(vfov / 2)  # bottom row, below the axis
            assert obs.depth[47, 32] == pytest.approx(cam_h / slope, rel=1e-3)


def test_sampling_is_seeded():
    def draws(seed):
        sim = EmbeddedSimulator(SimConfig(render=False, seed=seed))
        sim.load_scene(SCENE)
        return [tuple(sim.sample_navigable_point()) for _ in range(3)]

    first = draws(4)
    assert first == draws(4)
    assert len(set(first)) == 3
    assert first != draws(5)
