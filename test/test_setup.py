"""setup.py's dependency ranges against the pinned and the oldest-tested versions."""

from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def metadata():
    """The keyword arguments setup.py passes to setup(), without building anything."""
    captured = {}
    patch = pytest.MonkeyPatch()
    patch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    patch.chdir(REPO)
    try:
        exec(compile((REPO / "setup.py").read_text(), "setup.py", "exec"), {"__name__": "setup"})
    finally:
        patch.undo()
    return captured


def pins(name: str) -> dict[str, Version]:
    """``name==version`` lines of requirements/<name>.txt."""
    out = {}
    for line in (REPO / "requirements" / f"{name}.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements/{name}.txt: {line} is not an exact pin"
            out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def ranges(requirements: list[str]) -> dict[str, Requirement]:
    """Requirements by canonical name (several lines for one name are merged)."""
    out: dict[str, Requirement] = {}
    for line in requirements:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name in out:
            out[name].specifier &= req.specifier
        else:
            out[name] = req
    return out


def test_policy_needs_no_ros_wheels_and_no_opencv(metadata):
    names = set(ranges(metadata["install_requires"]))
    assert names == {"numpy", "pillow", "pyyaml", "torch", "transformers", "tokenizers",
                     "safetensors"}
    assert all(not r.specifier or ">" in str(r.specifier)
               for r in ranges(metadata["install_requires"]).values())  # ranges, never pins


@pytest.mark.parametrize("extra, files", [
    (None, ["policy"]),
    ("ros", ["ros", "policy"]),
    ("sim", ["sim", "policy"]),
    ("training", ["sim", "training", "policy"]),
])
def test_every_pin_lies_in_the_ranges(metadata, extra, files):
    wanted = metadata["install_requires"] + (metadata["extras_require"][extra] if extra else [])
    pinned = {k: v for f in files for k, v in pins(f).items()}
    for name, req in ranges(wanted).items():
        assert name in pinned, f"{name} has a range in setup.py but no pin in {files}"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"{name}: pinned {pinned[name]} is outside setup.py's {req.specifier}")


def test_oldest_tested_versions_are_the_lower_bounds(metadata):
    oldest = pins("oldest")
    core = ranges(metadata["install_requires"])
    for name, req in core.items():
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert floors, f"{name} has no lower bound in setup.py"
        assert oldest[name] >= floors[0] and req.specifier.contains(oldest[name])
        assert oldest[name].release[:2] == floors[0].release[:2], (
            f"{name}: the lower bound {floors[0]} was not tested (oldest.txt has {oldest[name]})")
    sim = ranges(metadata["extras_require"]["sim"])
    for name, req in sim.items():
        assert req.specifier.contains(oldest[name]), f"{name} {oldest[name]} not in {req}"


def test_compat_module_knows_the_transformers_floor(metadata):
    from janus_core import compat

    (req,) = [r for r in metadata["install_requires"] if r.startswith("transformers")]
    floor = next(s.version for s in Requirement(req).specifier if s.operator == ">=")
    assert Version(floor).release[:2] == compat.MIN_TRANSFORMERS


def test_python_versions_declared(metadata):
    assert metadata["python_requires"] == ">=3.10"
    declared = {c.rsplit(" ", 1)[-1] for c in metadata["classifiers"]
                if c.startswith("Programming Language :: Python :: 3.")}
    assert declared == {"3.10", "3.11", "3.12"}
