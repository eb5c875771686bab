"""Which simulator backend runs an episode: a small registry of the backends.

:mod:`sim_bridge.simulator` knows no backend, so the imports point one way (backend ->
simulator, registry -> backend).

Each backend registers a :class:`Backend`: its name, where its
:class:`~sim_bridge.simulator.Simulator` class lives (imported only when one is built), which
scene ids it loads and, when it cannot run on this machine, why (one line with the fix):

- ``embedded`` (:mod:`sim_bridge.embedded`): generated apartments ``embedded:apt_<seed>`` and
  SceneSpec ``.json`` files; runs anywhere.
- ``habitat`` (:mod:`sim_bridge.habitat_backend`): habitat-sim scenes (the MP3D ``.glb`` files
  of the official R2R-CE / RxR-CE splits), run by a worker under the Python that has
  habitat-sim (``SimConfig.habitat_python``, ``$JANUS_HABITAT_PYTHON`` or this one). It can run
  when that interpreter finds ``habitat_sim`` (probed without importing it). When the backend
  module defines ``unavailable_reason(cfg) -> str | None``, the registry asks it instead.

``auto`` is resolved from the scenes of the episodes to run (:func:`choose_backend`): the
backend that loads all of them, never the embedded simulator for habitat scenes. Without scene
ids (:func:`make_simulator` alone) ``auto`` means habitat when it can run, else embedded.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import Any

from sim_bridge.simulator import BackendUnavailableError

log = logging.getLogger(__name__)

AUTO = "auto"
PROBE_TIMEOUT_S = 60.0  # a cold conda Python can be slow to start
_PROBE = ("import importlib.util, sys; "
          "sys.exit(0 if importlib.util.find_spec('habitat_sim') else 3)")


class BackendError(ValueError):
    """A backend cannot run these scenes; the one-line message names the scene and the fix."""


class BackendMissingError(BackendUnavailableError, ImportError):
    """The chosen backend cannot run on this machine (e.g. habitat-sim is not installed)."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """One registered simulator backend (see the module docstring)."""

    name: str
    target: str  # "module:Class", imported by make_simulator only
    scenes: str  # what it loads, for messages ("generated apartments 'embedded:apt_<seed>'")
    loads: Callable[[str], bool]  # whether it loads this scene id
    unavailable: Callable[[Any], str | None]  # (SimConfig or None) -> None when it runs here,
    # else the reason and the fix, one line


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    """Add (or replace) a backend; :func:`choose_backend` tries them in registration order."""
    _REGISTRY[backend.name] = backend


def names() -> tuple[str, ...]:
    """Every registered backend name, then ``auto``."""
    return (*_REGISTRY, AUTO)


def get(name: str) -> Backend:
    """The backend called ``name``; BackendError listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown simulator backend {name!r}; known: {list(names())}") from None


# ---- the two backends ---------------------------------------------------------------------------


def _embedded_loads(scene_id: str) -> bool:
    from sim_bridge.scene import is_embedded_scene_id

    return isinstance(scene_id, str) and is_embedded_scene_id(scene_id)


def _habitat_loads(scene_id: str) -> bool:
    return isinstance(scene_id, str) and bool(scene_id) and not scene_id.startswith("embedded:") \
        and not _embedded_loads(scene_id)


def habitat_available() -> bool:
    """Whether ``habitat_sim`` can be imported in this Python (without importing it)."""
    if "habitat_sim" in sys.modules:
        return sys.modules["habitat_sim"] is not None
    try:
        return importlib.util.find_spec("habitat_sim") is not None
    except (ImportError, ValueError):
        return False


def _habitat_unavailable(cfg: Any = None) -> str | None:
    """Why the habitat worker cannot run with ``cfg`` (None when it can), without starting it."""
    from sim_bridge import habitat_backend as hb  # imports no habitat_sim
    from sim_bridge.simulator import SimConfig

    hook = getattr(hb, "unavailable_reason", None)
    if callable(hook):
        return hook(cfg)
    python = hb.worker_python(cfg if cfg is not None else SimConfig(backend="habitat"))
    if python == sys.executable and habitat_available():
        return None
    exe = shutil_which(python)
    if exe is None:
        return (f"the habitat worker's Python {python!r} is not found or not executable (set "
                f"sim.habitat_python or {hb.PYTHON_ENV} to the bin/python of the environment "
                "that has habitat-sim; docs/habitat.md)")
    try:
        probe = subprocess.run([exe, "-c", _PROBE], capture_output=True,
                               timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"the habitat worker's Python {exe} does not run ({err}); docs/habitat.md"
    if probe.returncode == 0:
        return None
    return (f"habitat-sim is not installed for the habitat worker's Python ({exe}). "
            f"{hb.INSTALL_HINT}")


def shutil_which(python: str) -> str | None:
    """``python`` as an executable path (a name on PATH or a file), else None."""
    import shutil

    exe = shutil.which(python) or python
    return exe if os.path.isfile(exe) and os.access(exe, os.X_OK) else None


register(Backend(
    name="embedded", target="sim_bridge.embedded:EmbeddedSimulator",
    scenes="generated apartments 'embedded:apt_<seed>' and SceneSpec .json files",
    loads=_embedded_loads, unavailable=lambda cfg: None,
))
register(Backend(
    name="habitat", target="sim_bridge.habitat_backend:HabitatSimulator",
    scenes="habitat-sim scenes such as the MP3D .glb files of R2R-CE / RxR-CE",
    loads=_habitat_loads, unavailable=_habitat_unavailable,
))


# ---- choosing and building ----------------------------------------------------------------------


def check_available(name: str, cfg: Any = None) -> None:
    """BackendMissingError (one line, with the install hint) unless ``name`` runs here.

    ``cfg``: the SimConfig it would run with (the habitat worker's interpreter is a setting).
    """
    reason = get(name).unavailable(cfg)
    if reason:
        raise BackendMissingError(f"backend {name}: {reason}")


def choose_backend(name: str, scene_ids: Iterable[str], where: str = "the episodes",
                   cfg: Any = None) -> str:
    """The backend that runs ``scene_ids``: ``name``, or for ``auto`` the one that loads them all.

    Raises BackendError naming the first scene the backend cannot load and the backend that can,
    and BackendMissingError when that backend cannot run here (with ``cfg``, a SimConfig):
    before any episode runs.
    """
    scenes = list(dict.fromkeys(scene_ids))
    if name == AUTO:
        for backend in _REGISTRY.values():
            if all(backend.loads(s) for s in scenes):
                name = backend.name
                log.info("backend auto -> %s (the scenes of %s)", name, where)
                break
        else:
            mixed = {b.name: next((s for s in scenes if b.loads(s)), None)
                     for b in _REGISTRY.values()}
            found = {k: v for k, v in mixed.items() if v is not None}
            if len(found) > 1:
                raise BackendError(
                    f"{where} mix scenes of several backends ({found}); split the file by backend")
            name = next(iter(_REGISTRY))  # nobody loads them: report against the default
    backend = get(name)
    bad = next((s for s in scenes if not backend.loads(s)), None)
    if bad is not None:
        other = next((b for b in _REGISTRY.values() if b.loads(bad)), None)
        fix = (f"use --backend {other.name} ({other.scenes})" if other is not None
               else "no backend loads it")
        raise BackendError(
            f"scene {bad!r} of {where} cannot be loaded by the {name} backend (it loads "
            f"{backend.scenes}); {fix}")
    check_available(name, cfg)
    return name


def make_simulator(cfg: Any = None) -> Any:
    """The simulator ``cfg.backend`` names (a SimConfig, a mapping of its fields, or None).

    ``auto`` without scene ids: habitat when it can run here, else embedded. A backend that
    cannot run here raises a BackendUnavailableError (one line with the install hint): the
    habitat backend's own when its worker cannot start.
    """
    from sim_bridge.simulator import SimConfig

    if cfg is None:
        cfg = SimConfig()
    elif isinstance(cfg, dict):
        cfg = SimConfig.from_dict(cfg)
    name = cfg.backend
    if name == AUTO:
        name = "habitat" if not get("habitat").unavailable(cfg) else "embedded"
        log.info("SimConfig.backend=auto -> %s", name)
    module, _, cls = get(name).target.partition(":")
    return getattr(importlib.import_module(module), cls)(cfg)
