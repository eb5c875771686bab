"""The habitat backend: its worker protocol, and the backend driven against a MOCK habitat_sim.

habitat-sim cannot be installed here (conda, Python 3.9). ``fake_habitat/habitat_sim`` is a MOCK
of it (labelled so in its docstring): a subset of the real module's names with the real types
(numpy-quaternion rotations, ``[H, W]`` resolutions, RGBA uint8 flipped-view observations,
``"collided"`` in step observations, no ``previous_step_collided``) and a toy world (one room,
one wall). The worker runs it in a separate process, exactly as it runs habitat-sim, so these
tests exercise the real pipes, shared memory, restarts and timeouts; habitat-sim's own behaviour
is covered by test_habitat_contract.py where habitat-sim exists.
"""

import ast
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import sim_bridge.habitat_backend as hb
import sim_bridge.habitat_worker as hw
from janus_core.actions import Action
from janus_core.interface import Policy, StepResult
from sim_bridge.backends import make_simulator
from sim_bridge.episodes import Episode, Goal, save_split
from sim_bridge.evaluate import EvalConfig, evaluate
from sim_bridge.simulator import (
    BackendUnavailableError,
    SimConfig,
    yaw_to_quaternion,
)

FAKE = Path(__file__).resolve().parent / "fake_habitat"
WORKER_SOURCE = Path(hw.__file__).read_text()

pytest.importorskip("quaternion", reason="the MOCK habitat_sim uses numpy-quaternion, as "
                    "habitat-sim does (pip install numpy-quaternion; requirements/dev.txt)")


# ---- the worker's source: Python 3.9, habitat_sim + numpy + stdlib only ----------------------


def test_worker_parses_as_python39_and_imports_only_habitat_numpy_stdlib():
    tree = ast.parse(WORKER_SOURCE, feature_version=(3, 9))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the worker runs as a script: no relative imports"
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"numpy", "habitat_sim"}
    for node in ast.walk(tree):  # 3.10+ library features the parser does not catch
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "zip":
            assert not any(k.arg == "strict" for k in node.keywords), "zip(strict=) is 3.10+"
        for ann in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if ann is not None:
                assert not any(isinstance(n, ast.BinOp) for n in ast.walk(ann)), \
                    f"X | Y annotation at line {node.lineno} fails on Python 3.9"


def _python39() -> str | None:
    for candidate in (os.environ.get("JANUS_TEST_PYTHON39"), shutil.which("python3.9")):
        if candidate and subprocess.run([candidate, "-c", "import numpy"],
                                        capture_output=True).returncode == 0:
            return candidate
    return None


def test_worker_and_mock_compile_under_a_real_python39():
    python39 = _python39()
    if python39 is None:
        pytest.skip("no Python 3.9 with numpy here (set JANUS_TEST_PYTHON39)")
    files = [str(Path(hw.__file__))] + [str(p) for p in FAKE.rglob("*.py")]
    code = "import ast, sys\nfor f in sys.argv[1:]: compile(open(f).read(), f, 'exec')"
    result = subprocess.run([python39, "-c", code, *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---- the MOCK's surface against the real module -----------------------------------------------

# Public names of habitat_sim v0.2.4 (src_python/habitat_sim/__init__.py and the modules it
# imports), and attributes of the classes the worker configures (pybind / attrs slots).
REAL_TOP_LEVEL = {
    "agent", "attributes", "attributes_managers", "geo", "gfx", "logging", "metadata", "nav",
    "physics", "scene", "sensor", "sensors", "sim", "simulator", "utils", "errors",
    "MapStringString", "registry", "ActionSpec", "Agent", "AgentConfiguration", "AgentState",
    "SixDOFPose", "ActuationSpec", "ObjectControls", "PyRobotNoisyActuationSpec",
    "SceneNodeControl", "controls", "default_controls", "object_controls",
    "pyrobot_noisy_controls", "ReplayRenderer", "ReplayRendererConfiguration", "RigidState",
    "SceneGraph", "SceneNode", "SceneNodeType", "SimulatorConfiguration", "audio_enabled",
    "built_with_bullet", "cuda_enabled", "vhacd_enabled", "GreedyFollowerCodes",
    "GreedyGeodesicFollower", "HitRecord", "MultiGoalShortestPath", "NavMeshSettings",
    "PathFinder", "ShortestPath", "VectorGreedyCodes", "AudioSensor", "AudioSensorSpec",
    "CameraSensorSpec", "EquirectangularSensor", "EquirectangularSensorSpec",
    "FisheyeSensorDoubleSphereSpec", "FisheyeSensorModelType", "FisheyeSensorSpec", "Sensor",
    "SensorFactory", "SensorSpec", "SensorSubType", "SensorType", "VisualSensorSpec",
    "Configuration", "Simulator",
}
REAL_SLOTS = {  # SimBindings.cpp, ShortestPathBindings.cpp, agent.py, simulator.py at v0.2.4
    "SimulatorConfiguration": {
        "scene_dataset_config_file", "scene_id", "random_seed", "default_agent_id",
        "gpu_device_id", "allow_sliding", "create_renderer",
        "leave_context_with_background_renderer", "frustum_culling", "enable_physics",
        "use_semantic_textures", "enable_gfx_replay_save", "physics_config_file",
        "override_scene_light_defaults", "scene_light_setup", "load_semantic_mesh",
        "force_separate_semantic_scene_graph", "requires_textures"},
    "AgentConfiguration": {"height", "radius", "sensor_specifications", "action_space",
                           "body_type"},
    "AgentState": {"position", "rotation", "sensor_states"},
    "Configuration": {"sim_cfg", "agents", "metadata_mediator", "enable_batch_renderer"},
    "ShortestPath": {"requested_start", "requested_end", "points", "geodesic_distance"},
}


@pytest.fixture
def mock_module(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE))
    for name in [m for m in sys.modules if m == "habitat_sim" or m.startswith("habitat_sim.")]:
        monkeypatch.delitem(sys.modules, name)
    import habitat_sim

    assert Path(habitat_sim.__file__).is_relative_to(FAKE)
    yield habitat_sim
    for name in [m for m in sys.modules if m == "habitat_sim" or m.startswith("habitat_sim.")]:
        del sys.modules[name]


def test_mock_exposes_only_real_names_with_real_types(mock_module):
    import quaternion

    hs = mock_module
    public = {n for n in dir(hs) if not n.startswith("_")}
    assert public <= REAL_TOP_LEVEL, public - REAL_TOP_LEVEL
    for cls, attrs in REAL_SLOTS.items():
        assert set(getattr(hs, cls).__slots__) <= attrs, cls
    with pytest.raises(AttributeError):  # pybind classes refuse attributes they do not have
        hs.SimulatorConfiguration().previous_step_collided = False
    assert not hasattr(hs.Simulator, "previous_step_collided")
    assert isinstance(hs.AgentState().rotation, quaternion.quaternion)


def test_mock_simulator_observations_have_habitats_types(mock_module, tmp_path):
    import quaternion

    hs = mock_module
    scene = tmp_path / "s.glb"
    scene.write_bytes(b"glTF")
    sim_cfg = hs.SimulatorConfiguration()
    sim_cfg.scene_id = str(scene)
    spec = hs.CameraSensorSpec()
    spec.uuid, spec.sensor_type, spec.resolution = "rgb", hs.SensorType.COLOR, [6, 8]
    agent = hs.AgentConfiguration(sensor_specifications=[spec])
    sim = hs.Simulator(hs.Configuration(sim_cfg, [agent]))
    obs = sim.step("move_forward")
    assert obs["rgb"].shape == (6, 8, 4) and obs["rgb"].dtype == np.uint8
    assert obs["rgb"].strides[0] < 0  # a flipped view of the sensor buffer, as habitat-sim's
    assert isinstance(obs["collided"], bool)
    assert isinstance(sim.get_agent(0).get_state().rotation, quaternion.quaternion)


# ---- framing ------------------------------------------------------------------------------------


def test_messages_round_trip_and_fail_clearly():
    r, w = os.pipe()
    try:
        hw.write_message(w, {"op": "step", "args": {"x": [1.5, math.inf]}})
        assert hw.read_message(r, time.monotonic() + 1) == {"op": "step",
                                                           "args": {"x": [1.5, math.inf]}}
        with pytest.raises(TimeoutError):
            hw.read_message(r, time.monotonic() + 0.05)
        os.write(w, (5).to_bytes(4, "big") + b"{")
        os.close(w)
        w = -1
        with pytest.raises(hw.ProtocolError, match="pipe closed after 1 of 5 bytes"):
            hw.read_message(r, time.monotonic() + 1)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_scene_ids_resolve_as_in_vln_ce(tmp_path):
    assert hb.resolve_scene("data/scene_datasets/mp3d/a/a.glb", tmp_path) == \
        tmp_path / "mp3d/a/a.glb"
    assert hb.resolve_scene("mp3d/a/a.glb", tmp_path) == tmp_path / "mp3d/a/a.glb"
    assert hb.resolve_scene("/abs/a.glb", tmp_path) == Path("/abs/a.glb")


# ---- the backend against the MOCK, in a worker process -----------------------------------------


@pytest.fixture
def scenes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(FAKE))  # the worker process imports the MOCK
    monkeypatch.delenv(hb.PYTHON_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # worker logs of killed workers
    scene = tmp_path / "mp3d" / "abc" / "abc.glb"
    scene.parent.mkdir(parents=True)
    scene.write_bytes(b"glTF")
    return tmp_path


def _cfg(scenes_dir, **kw):
    return SimConfig(**{"backend": "habitat", "scenes_dir": str(scenes_dir), "width": 32,
                        "height": 24, "habitat_timeout_s": 20.0, "habitat_load_timeout_s": 60.0,
                        **kw})


def _episode(start=(3.0, 0.0, 3.0), goal=(-3.0, 0.0, -3.0), scene="mp3d/abc/abc.glb", eid="h1",
             yaw=0.0):
    return Episode(eid, scene, list(start), yaw_to_quaternion(yaw), [Goal(list(goal))], "go")


def _pose_pixel(position, yaw):
    return [round((position[0] + 5) * 20), round((position[2] + 5) * 20),
            round(math.degrees(yaw) % 360 / 360 * 255) % 256]


def test_backend_drives_the_worker_and_frames_arrive_through_shared_memory(scenes):
    with make_simulator(_cfg(scenes, turn_angle=30.0, depth_max=4.0)) as sim:
        assert isinstance(sim, hb.HabitatSimulator)
        assert sim.worker.info["habitat_sim"] == "0.2.4"
        obs = sim.reset(_episode(scene="data/scene_datasets/mp3d/abc/abc.glb"))
        assert sim.navmesh_source == "computed"  # no .navmesh beside the scene
        assert obs.rgb.shape == (24, 32, 3) and obs.rgb.dtype == np.uint8
        assert obs.depth.shape == (24, 32) and obs.depth.dtype == np.float32
        assert obs.rgb[5, 7].tolist() == _pose_pixel(obs.position, obs.yaw)
        assert float(obs.depth.max()) == 4.0  # 8 m to the far wall, clipped to depth_max
        first = obs.rgb.copy()
        obs = sim.step(Action.MOVE_FORWARD)
        assert obs.position == pytest.approx([3.0, 0.0, 2.75], abs=1e-5) and not obs.collided
        obs = sim.step(Action.TURN_LEFT)
        assert obs.yaw == pytest.approx(math.radians(30)) and sim.yaw == obs.yaw
        assert obs.rgb[0, 0].tolist() == _pose_pixel(obs.position, obs.yaw)
        assert not np.array_equal(first, obs.rgb)  # each observation owns its frame
        stop = sim.step(Action.STOP)
        assert stop.position.tolist() == obs.position.tolist() and not stop.collided
        assert sim.geodesic_distance([3, 0, 3], [3, 0, -1]) == pytest.approx(4.0, abs=1e-4)
        around = sim.geodesic_distance([-3, 0, 3], [-3, 0, -3])  # the wall is in between
        assert around > 8.0
        assert math.isinf(sim.geodesic_distance([3, 0, 3], [30, 0, 3]))
        assert sim.is_navigable([1, 0, 1]) and not sim.is_navigable([-2, 0, 0])
        assert sim.snap_point([-2.0, 0.0, 0.01]) is not None
        point = sim.sample_navigable_point(np.random.default_rng(0))
        assert sim.is_navigable(point)
        tdm = sim.top_down_map()
        assert tdm.navigable.any() and not tdm.navigable.all()
        assert tdm.image.shape == (*tdm.navigable.shape, 3)


def test_expert_reaches_the_goal_around_the_wall_and_stops_inside_the_radius(scenes):
    with make_simulator(_cfg(scenes)) as sim:
        sim.reset(_episode(start=(-3.0, 0.0, 3.0), goal=(-3.0, 0.0, -3.0)))
        for _ in range(200):
            action = sim.expert_action()
            if action == Action.STOP:
                break
            sim.step(action)
        assert action == Action.STOP
        assert sim.distance_to_goal() < sim.config.expert_stop_radius
        assert sim.expert_action(goal=[30.0, 0.0, 0.0]) == Action.STOP  # no path: STOP


def test_collisions_come_from_the_steps_observations_with_and_without_sliding(scenes):
    start = (0.0, 0.0, 0.5)  # facing -z, 0.35 m from where the wall (+ agent radius) begins
    with make_simulator(_cfg(scenes)) as sim:
        sim.reset(_episode(start=start))
        sim.step(Action.TURN_LEFT)  # 15 degrees off the wall's normal: slides along x
        obs = sim.step(Action.MOVE_FORWARD)
        assert not obs.collided
        obs = sim.step(Action.MOVE_FORWARD)
        assert obs.collided and obs.position[0] < -0.1  # slid
    with make_simulator(_cfg(scenes, allow_sliding=False)) as sim:
        sim.reset(_episode(start=start))
        sim.step(Action.TURN_LEFT)
        sim.step(Action.MOVE_FORWARD)
        before = sim.position
        obs = sim.step(Action.MOVE_FORWARD)
        assert obs.collided and np.linalg.norm(obs.position - before) < 0.25


def test_a_navmesh_beside_the_scene_is_used(scenes):
    (scenes / "mp3d" / "abc" / "abc.navmesh").write_bytes(b"navmesh")
    with make_simulator(_cfg(scenes)) as sim:
        sim.reset(_episode())
        assert sim.navmesh_source == "loaded"
    with make_simulator(_cfg(scenes, habitat_navmesh="recompute")) as sim:
        sim.reset(_episode())
        assert sim.navmesh_source == "computed"


def test_bad_episodes_are_value_errors_naming_the_field(scenes):
    with make_simulator(_cfg(scenes)) as sim:
        with pytest.raises(ValueError, match=r"episode h1: field scene_id: .*not found"):
            sim.reset(_episode(scene="mp3d/missing/missing.glb"))
        with pytest.raises(ValueError, match=r"episode h1: field start_position .*navmesh"):
            sim.reset(_episode(start=(-2.0, 0.0, 0.0)))  # inside the wall
        ep = _episode()
        ep.start_rotation = [0, 0, 0, 0]
        with pytest.raises(ValueError, match=r"field start_rotation"):
            sim.reset(ep)
        with pytest.raises(RuntimeError, match="reset"):
            sim.step(Action.MOVE_FORWARD)
        sim.reset(_episode())  # still usable after the errors
        with pytest.raises(ValueError, match="set_agent_state"):
            sim.set_agent_state([-2.0, 0.0, 0.0], 0.0)


# ---- failures: one line each, the evaluation keeps its finished episodes ----------------------


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_missing_interpreter_is_one_clear_line(scenes):
    with pytest.raises(hb.HabitatUnavailableError) as err:
        make_simulator(_cfg(scenes, habitat_python="/nonexistent/env/bin/python"))
    assert "'/nonexistent/env/bin/python' not found" in _one_line(err)
    assert isinstance(err.value, ImportError) and isinstance(err.value, BackendUnavailableError)


def test_interpreter_without_habitat_sim_says_how_to_install(scenes, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "")  # the worker's Python has no habitat_sim
    with pytest.raises(hb.HabitatUnavailableError) as err:
        make_simulator(_cfg(scenes))
    text = _one_line(err)
    assert "cannot import habitat_sim (ModuleNotFoundError" in text
    assert "conda install -n habitat -y habitat-sim=0.2.4 withbullet headless" in text
    assert "sim.habitat_python" in text


def test_a_dead_worker_is_one_line_and_the_next_reset_restarts_it(scenes):
    with make_simulator(_cfg(scenes)) as sim:
        sim.reset(_episode())
        pid = sim.worker.pid
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(hb.HabitatWorkerError) as err:
            sim.step(Action.MOVE_FORWARD)
        assert f"habitat worker (pid {pid}) was killed by SIGKILL during 'step'" in \
            _one_line(err)
        with pytest.raises(RuntimeError, match="reset"):
            sim.step(Action.MOVE_FORWARD)
        obs = sim.reset(_episode())
        assert sim.worker.pid != pid and obs.position.tolist() == [3.0, 0.0, 3.0]


def test_a_hung_worker_is_stopped_after_the_timeout(scenes):
    with make_simulator(_cfg(scenes, habitat_timeout_s=1.0)) as sim:
        sim.reset(_episode())
        worker = sim.worker
        os.kill(worker.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(hb.HabitatWorkerError) as err:
            sim.step(Action.MOVE_FORWARD)
        assert time.monotonic() - t0 < 5
        assert "did not answer 'step' within 1 s; stopped it" in _one_line(err)
        assert not worker.alive()


class _Saboteur(Policy):
    """Drives with the expert; kills the worker at the first step of episode ``kill_in``."""

    def __init__(self, sim, kill_in: str, then_python: str | None = None):
        self.sim, self.kill_in, self.then_python = sim, kill_in, then_python

    def reset(self, instruction: str) -> None:
        self.first = True

    def act(self, observation) -> StepResult:
        if self.first and self.sim.episode.episode_id == self.kill_in:
            os.kill(self.sim.worker.pid, signal.SIGKILL)
            if self.then_python:  # e.g. the env was removed: the restart must fail
                self.sim.config = dataclasses.replace(self.sim.config,
                                                      habitat_python=self.then_python)
        self.first = False
        return StepResult(action=self.sim.expert_action())


def _eval_setup(scenes, tmp_path):
    split = tmp_path / "val.json.gz"
    save_split(split, [_episode(eid=str(i), start=(3.0, 0.0, 3.0 - i), goal=(3.0, 0.0, -3.0))
                       for i in (1, 2, 3)])
    cfg = EvalConfig(policy="saboteur", split=str(split), backend="habitat", width=32, height=24,
                     output_dir=str(tmp_path / "out"), progress=False,
                     sim={"scenes_dir": str(scenes), "habitat_timeout_s": 20.0})
    sim = make_simulator(_cfg(scenes))
    return cfg, sim


def _records(out: Path) -> dict:
    rows = [json.loads(line) for f in sorted((out / "results").glob("*.jsonl"))
            for line in f.read_text().splitlines()]
    return {r["episode_id"]: r for r in rows}


def test_evaluation_records_a_worker_death_and_goes_on_with_a_new_worker(scenes, tmp_path):
    cfg, sim = _eval_setup(scenes, tmp_path)
    try:
        evaluate(cfg, policy=_Saboteur(sim, "2"), sim=sim)
    finally:
        sim.close()
    records = _records(tmp_path / "out")
    assert [records[k]["status"] for k in "123"] == ["ok", "error", "ok"]
    assert "HabitatWorkerError: habitat worker" in records["2"]["error"]
    assert records["3"]["metrics"]["sr"] == 1.0


def test_a_worker_that_cannot_restart_stops_the_run_keeping_finished_episodes(scenes, tmp_path):
    cfg, sim = _eval_setup(scenes, tmp_path)
    try:
        with pytest.raises(BackendUnavailableError, match="not found"):
            evaluate(cfg, policy=_Saboteur(sim, "2", then_python="/gone/bin/python"), sim=sim)
    finally:
        sim.close()
    records = _records(tmp_path / "out")
    assert records["1"]["status"] == "ok" and records["2"]["status"] == "error"
    assert "3" not in records  # not recorded: a rerun with a working worker evaluates it


def test_the_worker_runs_under_python39_as_in_habitats_conda_env(scenes):
    python39 = _python39()
    if python39 is None or subprocess.run([python39, "-c", "import quaternion"],
                                          capture_output=True).returncode != 0:
        pytest.skip("no Python 3.9 with numpy and numpy-quaternion (set JANUS_TEST_PYTHON39)")
    with make_simulator(_cfg(scenes, habitat_python=python39)) as sim:
        assert sim.worker.info["python"].startswith("3.9.")
        sim.reset(_episode())
        obs = sim.step(Action.MOVE_FORWARD)
        assert obs.position == pytest.approx([3.0, 0.0, 2.75], abs=1e-5)
        assert obs.rgb[0, 0].tolist() == _pose_pixel(obs.position, obs.yaw)
