"""The factory picks the policy class by mode; the imports run one way (no cycle)."""

import ast
from pathlib import Path

import pytest
from janus_test_utils import small_cfg

import janus_core
from janus_core.config import ConfigError
from janus_core.factory import build_policy, load_components, policy_class
from janus_core.policy import JanusVLNPolicy
from janus_core.streaming import StreamingPolicy

PACKAGE = Path(janus_core.__file__).parent


def imported_modules(module: str) -> set[str]:
    """Every ``janus_core.*`` module a source file imports (top level or inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("janus_core")}


def test_imports_run_one_way():
    assert not {"janus_core.streaming", "janus_core.factory"} & imported_modules("policy")
    assert "janus_core.factory" not in imported_modules("streaming")
    assert "janus_core.policy" in imported_modules("streaming")
    assert {"janus_core.policy", "janus_core.streaming"} <= imported_modules("factory")


def test_build_policy_picks_the_class_by_mode(tmp_path):
    path = tmp_path / "cfg.yaml"
    small_cfg().to_yaml(path)
    assert type(build_policy(path, device="cpu")) is JanusVLNPolicy
    policy = build_policy(path, device="cpu", mode="streaming")
    assert type(policy) is StreamingPolicy and policy.cfg.mode == "streaming"
    model, processor = load_components(path, device="cpu", max_steps=7)
    assert model.cfg.max_steps == 7 and processor.cfg is model.cfg
    assert policy_class("reference") is JanusVLNPolicy
    with pytest.raises(ConfigError, match="mode"):
        policy_class("fast")
