"""Contract tests against a REAL habitat-sim: run only where one exists.

Set ``JANUS_HABITAT_PYTHON`` to an interpreter that imports habitat_sim (e.g. the conda env's
``bin/python``; docs/habitat.md) and run::

    JANUS_HABITAT_PYTHON=$HOME/miniconda3/envs/habitat/bin/python \\
        python -m pytest test/sim_bridge/test_habitat_contract.py -v

A generated apartment is exported as .glb (sim_bridge.scene_export), habitat-sim computes its
navmesh for the VLN-CE agent, and a few generated episodes run in both backends on the same
geometry: start navigability, geodesic distances, the first depth frame, an action replay and
the expert's metrics must agree within the tolerances below (the embedded backend uses a 5 cm
occupancy grid and its own renderer, habitat-sim Recast/Detour and Magnum).
"""

import dataclasses
import os

import numpy as np
import pytest

from janus_core.actions import Action
from sim_bridge.backends import make_simulator
from sim_bridge.evaluate import EvalConfig, run_episode
from sim_bridge.expert import ExpertPolicy
from sim_bridge.generate import GenerateConfig, generate_scene_episodes
from sim_bridge.scene import load_scene
from sim_bridge.scene_export import export_glb
from sim_bridge.simulator import SimConfig

pytestmark = pytest.mark.skipif(
    not os.environ.get("JANUS_HABITAT_PYTHON"),
    reason="needs a real habitat-sim: set JANUS_HABITAT_PYTHON to a Python that imports "
           "habitat_sim (docs/habitat.md)")

SCENE = "embedded:apt_00007"
GEODESIC_TOL = 0.10  # relative (and at least 0.3 m)
DEPTH_TOL = 0.25  # metres, median absolute difference of the first depth frame
REPLAY_TOL = 1.0  # metres between the final positions of the same action sequence


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract")
    common = {"width": 160, "height": 120, "hfov_deg": 79.0, "seed": 0}
    embedded = make_simulator(SimConfig(backend="embedded", furniture="shapes", **common))
    cfg = GenerateConfig(min_geodesic=3.0, max_geodesic=9.0, mean_geodesic=6.0,
                         sim={"render": False, "furniture": "shapes"})
    episodes = generate_scene_episodes(embedded, SCENE, 3, np.random.default_rng(0), cfg, 0, 0)
    assert episodes, "no episode could be generated"
    export_glb(load_scene(SCENE), tmp / "apt_00007.glb")
    habitat = make_simulator(SimConfig(backend="habitat", scenes_dir=str(tmp),
                                       habitat_navmesh="recompute", **common))
    pairs = [(ep, dataclasses.replace(ep, scene_id="apt_00007.glb")) for ep in episodes]
    yield embedded, habitat, pairs
    habitat.close()
    embedded.close()


def test_the_navmesh_is_computed_and_starts_are_navigable(both):
    embedded, habitat, pairs = both
    for ep, hab_ep in pairs:
        habitat.reset(hab_ep)
        assert habitat.navmesh_source == "computed"
        assert habitat.is_navigable(ep.start_position)
        assert habitat.position == pytest.approx(ep.start_position, abs=0.05)


def test_geodesic_distances_agree(both):
    embedded, habitat, pairs = both
    for ep, hab_ep in pairs:
        embedded.reset(ep)
        habitat.reset(hab_ep)
        d_emb = embedded.geodesic_distance(ep.start_position, ep.goal_position)
        d_hab = habitat.geodesic_distance(ep.start_position, ep.goal_position)
        assert abs(d_hab - d_emb) <= max(0.3, GEODESIC_TOL * d_emb), (ep.episode_id, d_emb, d_hab)


def test_the_first_depth_frame_agrees(both):
    embedded, habitat, pairs = both
    for ep, hab_ep in pairs:
        a, b = embedded.reset(ep), habitat.reset(hab_ep)
        assert a.depth.shape == b.depth.shape == (120, 160)
        assert b.rgb.dtype == np.uint8 and b.rgb.shape == (120, 160, 3)
        assert float(np.median(np.abs(a.depth - b.depth))) < DEPTH_TOL, ep.episode_id


def test_an_action_replay_ends_in_the_same_place(both):
    embedded, habitat, pairs = both
    for ep, hab_ep in pairs:
        embedded.reset(ep)
        habitat.reset(hab_ep)
        for _ in range(300):
            action = embedded.expert_action()
            if action == Action.STOP:
                break
            embedded.step(action)
            habitat.step(action)
        gap = float(np.linalg.norm(embedded.position[[0, 2]] - habitat.position[[0, 2]]))
        assert gap < REPLAY_TOL, (ep.episode_id, embedded.position, habitat.position)


def test_the_experts_metrics_agree(both):
    embedded, habitat, pairs = both
    cfg = EvalConfig(policy="expert", max_steps=500)
    for ep, hab_ep in pairs:
        m_emb = run_episode(embedded, ExpertPolicy(embedded), ep, cfg)["metrics"]
        m_hab = run_episode(habitat, ExpertPolicy(habitat), hab_ep, cfg)["metrics"]
        assert m_emb["sr"] == m_hab["sr"] == 1.0, (m_emb, m_hab)
        assert abs(m_emb["spl"] - m_hab["spl"]) < 0.15, (m_emb, m_hab)
        assert abs(m_emb["ne"] - m_hab["ne"]) < 1.0, (m_emb, m_hab)
