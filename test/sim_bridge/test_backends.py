"""The backend registry: simulator.py knows no backend; ``auto`` and scene checks by scene id."""

import ast
import sys
import types
from pathlib import Path

import pytest

from sim_bridge import backends
from sim_bridge.backends import BackendError, choose_backend
from sim_bridge.simulator import BackendUnavailableError

REPO = Path(__file__).resolve().parents[2]
MP3D = "mp3d/zsNo4HB9uLZ/zsNo4HB9uLZ.glb"


def test_simulator_module_imports_no_backend():
    tree = ast.parse((REPO / "sim_bridge" / "simulator.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert not imported & {"sim_bridge.embedded", "sim_bridge.habitat_backend",
                           "sim_bridge.backends"}
    assert backends.names() == ("embedded", "habitat", "auto")


def test_scenes_decide_the_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "habitat_sim", None)  # not installed
    assert choose_backend("auto", ["embedded:apt_00001", "embedded:apt_00002"]) == "embedded"
    assert choose_backend("embedded", ["embedded:apt_00001"]) == "embedded"
    with pytest.raises(BackendError, match=f"scene '{MP3D}' of split.json.gz cannot be loaded "
                       "by the embedded backend .*; use --backend habitat"):
        choose_backend("embedded", ["embedded:apt_00001", MP3D], where="split.json.gz")
    with pytest.raises(BackendError, match="cannot be loaded by the habitat backend .*use "
                       "--backend embedded"):
        choose_backend("habitat", ["embedded:apt_00001"])
    # auto never picks the embedded simulator for MP3D scenes: habitat, which is missing here
    with pytest.raises(BackendUnavailableError) as err:
        choose_backend("auto", [MP3D])
    text = str(err.value)
    assert text.startswith("backend habitat: habitat-sim is not installed for the habitat "
                           "worker's Python") and "conda" in text and "\n" not in text
    with pytest.raises(BackendError, match="mix scenes of several backends"):
        choose_backend("auto", ["embedded:apt_00001", MP3D])
    with pytest.raises(BackendError, match="unknown simulator backend 'unity'"):
        choose_backend("unity", [MP3D])


def test_habitat_availability_comes_from_the_backend_when_it_says(monkeypatch):
    """A backend module may answer for itself (e.g. an out-of-process habitat worker)."""
    import sim_bridge.habitat_backend as hb

    monkeypatch.setitem(sys.modules, "habitat_sim", None)
    monkeypatch.setattr(hb, "unavailable_reason", lambda cfg: None, raising=False)
    assert choose_backend("auto", [MP3D]) == "habitat"
    monkeypatch.setattr(hb, "unavailable_reason", lambda cfg: "the worker is gone", raising=False)
    with pytest.raises(BackendUnavailableError, match="backend habitat: the worker is gone"):
        choose_backend("habitat", [MP3D])
    monkeypatch.setitem(sys.modules, "habitat_sim", types.ModuleType("habitat_sim"))
    monkeypatch.delattr(hb, "unavailable_reason")
    assert choose_backend("auto", [MP3D]) == "habitat"  # habitat_sim imports in this Python
    from sim_bridge.simulator import SimConfig

    gone = SimConfig(backend="habitat", habitat_python="/gone/env/bin/python")
    with pytest.raises(BackendUnavailableError, match="worker's Python '/gone/env/bin/python' is "
                       "not found"):
        choose_backend("habitat", [MP3D], cfg=gone)
