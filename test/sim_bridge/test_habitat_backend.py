"""The habitat-sim backend: its install message, and its wiring checked against a MOCK.

habitat-sim cannot be installed here (conda only). The tests below therefore use
``mock_habitat_sim``: a MOCK module standing in for ``habitat_sim`` that records what the
backend configures and calls. It implements none of habitat-sim's behaviour beyond trivial
stand-ins (an open plane for the navmesh, straight-line distances). These tests check our code's
use of the API (VLN-CE agent configuration, action mapping, observation handling), not
habitat-sim itself.
"""

import ast
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import sim_bridge.habitat_backend as hb
from janus_core.actions import Action
from sim_bridge.episodes import Episode, Goal
from sim_bridge.simulator import SimConfig, habitat_available, make_simulator, yaw_to_quaternion


def test_module_imports_without_habitat_and_stays_python39():
    source = Path(hb.__file__).read_text()
    ast.parse(source, feature_version=(3, 9))  # habitat-sim's conda envs are Python 3.9/3.10
    assert "import habitat_sim" not in source.split("def import_habitat_sim")[0]


def test_missing_habitat_sim_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "habitat_sim", None)  # makes `import habitat_sim` fail
    assert not habitat_available()
    with pytest.raises(hb.HabitatUnavailableError) as err:
        make_simulator(SimConfig(backend="habitat"))
    msg = str(err.value)
    assert "conda install habitat-sim headless -c conda-forge -c aihabitat" in msg
    assert "backend='embedded'" in msg
    assert isinstance(err.value, ImportError)


def test_auto_backend_falls_back_to_embedded(monkeypatch):
    monkeypatch.setitem(sys.modules, "habitat_sim", None)
    sim = make_simulator(SimConfig(backend="auto", render=False))
    assert type(sim).__name__ == "EmbeddedSimulator"
    sim.close()


# ---- the MOCK ---------------------------------------------------------------------------------


def mock_habitat_sim(calls: list) -> types.ModuleType:
    """MOCK habitat_sim (not the real library): records the configuration and the calls."""
    hs = types.ModuleType("habitat_sim")
    hs.__mock__ = True

    class Plain:
        def __init__(self, *args, **kwargs):
            self.args = args
            self.__dict__.update(kwargs)

    hs.SimulatorConfiguration = type("SimulatorConfiguration", (Plain,), {})
    hs.CameraSensorSpec = type("CameraSensorSpec", (Plain,), {})
    hs.SensorType = types.SimpleNamespace(COLOR="COLOR", DEPTH="DEPTH")
    hs.SensorSubType = types.SimpleNamespace(PINHOLE="PINHOLE")
    hs.agent = types.SimpleNamespace(
        AgentConfiguration=type("AgentConfiguration", (Plain,), {}),
        ActionSpec=lambda name, actuation: types.SimpleNamespace(name=name, actuation=actuation),
        ActuationSpec=lambda amount: types.SimpleNamespace(amount=amount))

    class Configuration:
        def __init__(self, sim_cfg, agents):
            self.sim_cfg, self.agents = sim_cfg, agents

    hs.Configuration = Configuration

    class AgentState:
        position = None
        rotation = None

    hs.AgentState = AgentState
    hs.utils = types.SimpleNamespace(common=types.SimpleNamespace(
        quat_from_coeffs=lambda c: types.SimpleNamespace(x=c[0], y=c[1], z=c[2], w=c[3])))

    class NavMeshSettings(Plain):
        def set_defaults(self):
            calls.append(("navmesh_defaults",))

    hs.NavMeshSettings = NavMeshSettings

    class PathFinder:  # an open 10 x 10 m floor
        is_loaded = False

        def load_nav_mesh(self, path):
            calls.append(("load_nav_mesh", path))
            self.is_loaded = True

        def is_navigable(self, p):
            return abs(p[0]) < 5 and abs(p[2]) < 5 and abs(p[1]) < 0.5

        def find_path(self, sp):
            if not (self.is_navigable(sp.requested_start) and self.is_navigable(sp.requested_end)):
                return False
            sp.geodesic_distance = float(np.linalg.norm(np.subtract(sp.requested_end,
                                                                    sp.requested_start)))
            return True

        def seed(self, s):
            calls.append(("seed", s))

        def get_random_navigable_point(self):
            return np.array([1.0, 0.0, 2.0], np.float32)

        def get_topdown_view(self, mpp, height):
            return np.ones((int(10 / mpp), int(10 / mpp)), bool)

        def get_bounds(self):
            return np.array([-5.0, 0.0, -5.0]), np.array([5.0, 3.0, 5.0])

    class Agent:
        def __init__(self):
            self.state = AgentState()

        def get_state(self):
            return self.state

        def set_state(self, state, reset_sensors=True):
            calls.append(("set_state", list(state.position), state.rotation))
            self.state = state

    class Simulator:
        def __init__(self, config):
            calls.append(("Simulator", config))
            self.config = config
            self.pathfinder = PathFinder()
            self.agent = Agent()
            self.previous_step_collided = False

        def get_agent(self, i):
            return self.agent

        def reconfigure(self, config):
            calls.append(("reconfigure", config))

        def recompute_navmesh(self, pathfinder, settings):
            calls.append(("recompute_navmesh", settings.agent_height, settings.agent_radius))
            pathfinder.is_loaded = True

        def _observations(self):
            spec = self.config.agents[0].sensor_specifications[0]
            h, w = spec.resolution
            return {"rgb": np.full((h, w, 4), 7, np.uint8), "depth": np.full((h, w), 20.0)}

        def get_sensor_observations(self):
            calls.append(("observe",))
            return self._observations()

        def step(self, key):  # MOCK motion: enough to see the backend read the state back
            calls.append(("step", key))
            amount = self.config.agents[0].action_space[key].actuation.amount
            q = self.agent.state.rotation
            yaw = 2 * math.atan2(q.y, q.w)
            if key == "move_forward":
                self.agent.state.position = self.agent.state.position + amount * np.array(
                    [-math.sin(yaw), 0.0, -math.cos(yaw)], np.float32)
            else:
                yaw += math.radians(amount) * (1 if key == "turn_left" else -1)
                self.agent.state.rotation = types.SimpleNamespace(
                    x=0.0, y=math.sin(yaw / 2), z=0.0, w=math.cos(yaw / 2))
            return self._observations()

        def close(self):
            calls.append(("close",))

    hs.Simulator = Simulator

    class ShortestPath:
        requested_start = None
        requested_end = None
        geodesic_distance = math.inf

    hs.ShortestPath = ShortestPath

    class GreedyFollowerError(Exception):
        pass

    hs.errors = types.SimpleNamespace(GreedyFollowerError=GreedyFollowerError)

    class GreedyGeodesicFollower:
        def __init__(self, pathfinder, agent, goal_radius=None, *, stop_key=None,
                     forward_key=None, left_key=None, right_key=None):
            calls.append(("follower", goal_radius, stop_key, forward_key, left_key, right_key))
            self.agent, self.goal_radius = agent, goal_radius
            self.keys = (stop_key, forward_key, left_key)

        def reset(self):
            calls.append(("follower_reset",))

        def next_action_along(self, goal):
            if goal[0] > 4.5:
                raise GreedyFollowerError("no path")
            d = np.linalg.norm(np.subtract(goal, self.agent.get_state().position))
            return self.keys[0] if d <= self.goal_radius else self.keys[1 if d > 2 else 2]

    hs.nav = types.SimpleNamespace(GreedyGeodesicFollower=GreedyGeodesicFollower)
    return hs


@pytest.fixture
def mocked(monkeypatch, tmp_path):
    calls: list = []
    monkeypatch.setitem(sys.modules, "habitat_sim", mock_habitat_sim(calls))
    scene = tmp_path / "mp3d" / "abc" / "abc.glb"
    scene.parent.mkdir(parents=True)
    scene.write_bytes(b"glTF")
    cfg = SimConfig(backend="habitat", scenes_dir=str(tmp_path), depth_max=10.0)
    return calls, cfg


def _episode(start=(0.0, 0.0, 0.0), goal=(3.0, 0.0, 0.0), scene="mp3d/abc/abc.glb"):
    return Episode("hab1", scene, list(start), yaw_to_quaternion(0.0), [Goal(list(goal))], "go")


def test_vln_ce_configuration_with_mock(mocked):
    calls, cfg = mocked
    sim = make_simulator(cfg)
    assert isinstance(sim, hb.HabitatSimulator)
    obs = sim.reset(_episode())
    conf = next(c[1] for c in calls if c[0] == "Simulator")
    assert conf.sim_cfg.scene_id.endswith("mp3d/abc/abc.glb")
    assert conf.sim_cfg.allow_sliding is True and conf.sim_cfg.enable_physics is False
    agent = conf.agents[0]
    assert (agent.height, agent.radius) == (1.5, 0.1)
    amounts = {k: v.actuation.amount for k, v in agent.action_space.items()}
    assert amounts == {"move_forward": 0.25, "turn_left": 15.0, "turn_right": 15.0}
    rgb_spec, depth_spec = agent.sensor_specifications
    for spec in (rgb_spec, depth_spec):
        assert spec.resolution == [480, 640] and spec.hfov == 79.0
        assert spec.position == [0.0, 1.25, 0.0] and spec.sensor_subtype == "PINHOLE"
    assert (rgb_spec.sensor_type, depth_spec.sensor_type) == ("COLOR", "DEPTH")
    # no .navmesh beside the scene: one is computed for the VLN-CE agent
    assert ("recompute_navmesh", 1.5, 0.1) in calls
    assert ("follower", 0.25, None, "move_forward", "turn_left", "turn_right") in calls
    # observations: RGB without alpha, depth clipped to depth_max
    assert obs.rgb.shape == (480, 640, 3) and obs.depth.max() == 10.0
    sim.close()


def test_actions_and_queries_with_mock(mocked):
    calls, cfg = mocked
    sim = make_simulator(SimConfig(**{**cfg.to_dict(), "turn_angle": 30.0}))
    sim.reset(_episode())
    calls.clear()
    sim.step(Action.MOVE_FORWARD)
    assert sim.position == pytest.approx([0.0, 0.0, -0.25], abs=1e-6)
    sim.step(Action.TURN_LEFT)
    assert sim.yaw == pytest.approx(math.radians(30))
    sim.step(Action.STOP)
    assert [c[1] for c in calls if c[0] == "step"] == ["move_forward", "turn_left"]
    assert ("observe",) in calls  # STOP re-observes without stepping
    assert sim.geodesic_distance([0, 0, 0], [3, 0, 4]) == pytest.approx(5.0)
    assert math.isinf(sim.geodesic_distance([0, 0, 0], [30, 0, 0]))
    assert sim.distance_to_goal() == pytest.approx(math.dist(sim.position, [3, 0, 0]), abs=1e-6)
    assert sim.is_navigable([1, 0, 1]) and not sim.is_navigable([9, 0, 1])
    assert sim.expert_action() == Action.MOVE_FORWARD
    assert sim.expert_action(goal=sim.position) == Action.STOP
    assert sim.expert_action(goal=[4.9, 0, 0]) == Action.STOP  # follower error -> STOP
    tdm = sim.top_down_map()
    assert tdm.origin == (-5.0, -5.0) and tdm.navigable.all()
    assert sim.sample_navigable_point(np.random.default_rng(0)) == pytest.approx([1, 0, 2])
    sim.close()
    assert ("close",) in calls


def test_bad_input_with_mock(mocked, tmp_path):
    calls, cfg = mocked
    sim = make_simulator(cfg)
    with pytest.raises(ValueError, match=r"episode hab1: field scene_id: .*not found"):
        sim.reset(_episode(scene="mp3d/missing/missing.glb"))
    with pytest.raises(ValueError, match=r"episode hab1: field start_position .*navmesh"):
        sim.reset(_episode(start=(9.0, 0.0, 0.0)))
    with pytest.raises(ValueError, match=r"field start_rotation"):
        ep = _episode()
        ep.start_rotation = [0, 0, 0]
        sim.reset(ep)
    with pytest.raises(RuntimeError, match="reset"):
        make_simulator(cfg).step(Action.STOP)


def test_navmesh_file_is_used_with_mock(mocked, tmp_path):
    calls, cfg = mocked
    navmesh = tmp_path / "mp3d" / "abc" / "abc.navmesh"
    navmesh.write_bytes(b"navmesh")
    sim = make_simulator(cfg)
    sim.reset(_episode())
    assert ("load_nav_mesh", str(navmesh)) in calls
    assert not any(c[0] == "recompute_navmesh" for c in calls)
