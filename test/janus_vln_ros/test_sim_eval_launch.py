"""launch/sim_eval.launch.py without the launch tools (not installable here; ros2-env.md 8c).

The same checks as nav.launch.py (test_nav_launch.py's helpers are reused):

1. Static contract: parsed with ``ast``, never imported. Both executables are installed console
   scripts, every file it names exists and is installed, every LaunchConfiguration is a declared
   argument, the parameter files' keys and the launch overrides are parameters the nodes
   declare, with the right types, and the bridge's exit shuts the launch down.
2. ``janus-vln sim-eval`` (the no-launch command) passes each node exactly the files and
   overrides the launch file gives it.
3. Launch-equivalent, not ``ros2 launch``: both executables started with the launch file's node
   names, namespace, parameter files, overrides and environment evaluate a split with the expert
   behind the navigator's interface; the bridge exits 0 at the end (the launch's on_exit
   Shutdown), the navigator on SIGINT.
4. A real ``ros2 launch`` smoke test, skipped unless a full ROS 2 install provides ``ros2``.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess

import pytest
import rclpy
import yaml
from ros_harness import REPO, NodeProcess, RosHarness, param_arg
from test_nav_launch import (
    PACKAGE,
    LaunchContract,
    call_name,
    calls,
    const,
    installed_as,
    keyword,
    setup_py,
    share_file,
)

from janus_vln_ros import params as nav_params
from janus_vln_ros import sim_bridge_params, sim_eval
from sim_bridge.generate import GenerateConfig, generate_dataset
from sim_bridge.results import read_records

LAUNCH = REPO / "launch" / "sim_eval.launch.py"
DECLARED = {
    "navigator": (set(nav_params.PARAMETER_NAMES), nav_params.DEFAULTS),
    "sim_bridge": (set(sim_bridge_params.PARAMETER_NAMES), sim_bridge_params.DEFAULTS),
}
EXECUTABLE_MODULES = {"navigator": "janus_vln_ros.navigator_node",
                      "sim_bridge": "janus_vln_ros.sim_bridge_node"}


@pytest.fixture(scope="module")
def contract():
    return LaunchContract(LAUNCH)


def nodes_by_name(contract):
    return {node["name"]: node for node in contract.nodes}


def launch_args(contract, **overrides) -> dict[str, str]:
    args = {k: const(v) for k, v in contract.arguments.items() if isinstance(v, ast.Constant)}
    args.update(overrides)
    return args


def resolve(contract, value, args):
    """An override's value and Python type (constants as written, ParameterValue as typed)."""
    if isinstance(value, ast.Constant):
        return value.value, type(value.value)
    if isinstance(value, ast.Call) and call_name(value) == "ParameterValue":
        kind = {"str": str, "int": int, "float": float, "bool": bool}[
            keyword(value, "value_type").id]
        text = args[const(value.args[0].args[0])]
        if kind is bool:
            return {"true": True, "false": False}[text.lower()], bool
        return kind(text), kind
    resolved, kind = contract.resolve(value, args)
    return resolved, kind


# ---------------------------------------------------------------- 1. static contract
def test_launch_file_is_not_imported_but_parses(contract):
    assert set(nodes_by_name(contract)) == {"sim_bridge", "navigator"}
    assert calls(contract.tree, "generate_launch_description") == []
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
               for n in contract.tree.body)


def test_executables_are_installed_console_scripts(contract):
    scripts, _ = setup_py()
    for node in contract.nodes:
        assert node["package"] == PACKAGE
        target = scripts[node["executable"]]
        assert target == f"{EXECUTABLE_MODULES[node['name']]}:main"
        module, function = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))


def test_named_files_exist_and_are_installed(contract):
    _, installed = setup_py()
    assert installed_as("launch/sim_eval.launch.py", installed) == (
        f"share/{PACKAGE}/launch/sim_eval.launch.py")
    for argument in ("navigator_params", "sim_bridge_params", "eval_params", "fastdds_profile"):
        relative = contract.default_path(argument)
        assert relative and (REPO / relative).is_file(), argument
        assert installed_as(relative, installed) == f"share/{PACKAGE}/{relative}"
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in contract.environment


def test_launch_configurations_are_declared_arguments(contract):
    assert contract.configurations <= set(contract.arguments)
    assert not set(contract.arguments) - contract.configurations, "unused launch arguments"
    assert contract.arguments["model"] is None and contract.arguments["split"] is None
    for needed in ("output_dir", "namespace", "backend", "width", "height", "max_steps",
                   "limit", "episode_ids"):
        assert needed in contract.arguments


def test_bridge_exit_shuts_the_launch_down(contract):
    bridge = next(c for c in calls(contract.tree, "Node")
                  if const(keyword(c, "name")) == "sim_bridge")
    on_exit = keyword(bridge, "on_exit")
    assert isinstance(on_exit, ast.Call) and call_name(on_exit) == "Shutdown"
    overrides = nodes_by_name(contract)["sim_bridge"]["overrides"]
    assert const(overrides["exit_when_done"]) is True


def test_parameter_files_match_declared_parameters():
    """Every key of every params file the launch loads is a parameter of that node."""
    files = {"navigator": ["navigator.yaml", "sim_eval.yaml"],
             "sim_bridge": ["sim_bridge.yaml", "sim_eval.yaml"]}
    for name, names in files.items():
        declared, defaults = DECLARED[name]
        merged = {}
        for file_name in names:
            data = yaml.safe_load((REPO / "config" / file_name).read_text())
            block = data.get(f"/**/{name}")
            assert set(data) <= {"/**/navigator", "/**/sim_bridge"}, file_name
            if block is None:
                continue
            values = block["ros__parameters"]
            assert set(values) <= declared, f"{file_name}: {set(values) - declared}"
            for key, value in values.items():
                assert type(value) is type(defaults[key]), f"{file_name} {key}: {value!r}"
            merged.update(values)
    sim_bridge_params.SimBridgeParams.from_mapping(
        {**yaml.safe_load((REPO / "config" / "sim_bridge.yaml").read_text())[
            "/**/sim_bridge"]["ros__parameters"], "split": "x.json"})
    bridge_yaml = yaml.safe_load((REPO / "config" / "sim_bridge.yaml").read_text())
    assert set(bridge_yaml["/**/sim_bridge"]["ros__parameters"]) == DECLARED["sim_bridge"][0]


def test_eval_profile_is_consistent():
    """The bridge holds each velocity command for one navigator control period."""
    data = yaml.safe_load((REPO / "config" / "sim_eval.yaml").read_text())
    navigator = data["/**/navigator"]["ros__parameters"]
    bridge = data["/**/sim_bridge"]["ros__parameters"]
    assert navigator["control_rate"] * bridge["cmd_vel_period"] == pytest.approx(1.0)
    assert navigator["image_qos"] == "reliable" and navigator["motion_mode"] == "timed"


def test_declared_bridge_parameters(harness):
    """What the node declares is exactly SimBridgeParams (the YAML test relies on it)."""
    from janus_vln_ros.sim_bridge_params import declare_parameters

    node = rclpy.create_node("declare_check", context=harness.context, namespace="/static")
    plain = rclpy.create_node("plain", context=harness.context, namespace="/static")
    try:
        declare_parameters(node)
        declared = set(node.list_parameters([], 0).names) - set(
            plain.list_parameters([], 0).names)
        assert declared == DECLARED["sim_bridge"][0]
        assert all(node.describe_parameter(n).read_only for n in declared)
    finally:
        node.destroy_node()
        plain.destroy_node()


def test_launch_overrides_match_declared_parameters(contract):
    args = launch_args(contract, model="expert:ros", split="x.json")
    for name, node in nodes_by_name(contract).items():
        declared, defaults = DECLARED[name]
        values = {}
        for key, value in node["overrides"].items():
            assert key in declared, f"launch sets undeclared {name} parameter {key}"
            resolved, kind = resolve(contract, value, args)
            assert kind is type(defaults[key]), f"{name}.{key}: {kind}"
            values[key] = resolved
        if name == "navigator":
            nav_params.NavigatorParams().replace(**values)
        else:
            sim_bridge_params.SimBridgeParams.from_mapping(values)


# ---------------------------------------------------------------- 2. sim-eval = the launch file
def launch_equivalent_commands(contract, overrides: dict[str, str]):
    """Each node's command line and the environment sim_eval.launch.py would produce."""
    args = launch_args(contract, **overrides)
    commands = {}
    for name, node in nodes_by_name(contract).items():
        namespace = args[const(node["namespace"].args[0])]
        command = ["python", "-m", EXECUTABLE_MODULES[name], "--ros-args",
                   "-r", f"__node:={node['name']}"]
        if namespace:
            command += ["-r", f"__ns:=/{namespace.strip('/')}"]
        for item in node["files"]:
            (argument,) = (const(a) for a in item.args)
            path = args.get(argument) or share_file(contract.default_path(argument))
            command += ["--params-file", str(path)]
        for key, value in node["overrides"].items():
            resolved, _ = resolve(contract, value, args)
            command += ["-p", f"{key}:={param_arg(resolved)}"]
        command += ["--log-level", args["log_level"]]
        commands[name] = command
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(share_file(
        contract.default_path("fastdds_profile")))}
    return commands, env


def test_sim_eval_command_equals_the_launch_file(contract):
    values = {"model": "expert:ros", "split": "data/s.json.gz", "output_dir": "out/x",
              "namespace": "ns1", "backend": "auto", "width": "320", "height": "240",
              "forward_step": "0.5", "turn_angle": "30.0", "max_steps": "77", "limit": "4",
              "episode_ids": "3,5", "sim_settings": "{furniture: shapes}"}
    launched, env = launch_equivalent_commands(contract, values)
    cli = ["--" + k.replace("_", "-") + "=" + v for k, v in values.items()]
    args = sim_eval._parser().parse_args(cli)
    commands = sim_eval.node_commands(args)
    for name, command in commands.items():
        assert command[1:] == launched[name][1:], name  # all but the interpreter
    assert sim_eval.node_environment(args)["FASTDDS_DEFAULT_PROFILES_FILE"] == (
        os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or env["FASTDDS_DEFAULT_PROFILES_FILE"])


# ---------------------------------------------------------------- 3. launch-equivalent run
@pytest.fixture(scope="module")
def harness():
    h = RosHarness("sim_eval_launch_test")
    yield h
    h.close()


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    cfg = GenerateConfig(splits={"val_unseen": 2}, seed=7, episodes_per_scene=2,
                         min_geodesic=3.0, max_geodesic=5.0, mean_geodesic=4.0)
    return generate_dataset(out, cfg)["val_unseen"]


def test_launch_equivalent_processes_evaluate_a_split(contract, harness, split, tmp_path):
    """Launch-equivalent, not ``ros2 launch``: same executables, names, files, values, env."""
    out = tmp_path / "run"
    commands, env = launch_equivalent_commands(contract, {
        "model": "expert:ros", "split": str(split), "output_dir": str(out), "namespace": "leq",
        "width": "64", "height": "48", "sim_settings": "{furniture: shapes}"})
    import sys

    bridge = NodeProcess([sys.executable, *commands["sim_bridge"][1:]], env=env)
    navigator = NodeProcess([sys.executable, *commands["navigator"][1:]], env=env)
    try:
        assert bridge.wait(timeout=60) == 0, bridge.log() + navigator.log()  # -> Shutdown
        assert ("navigator", "/leq") in harness.node.get_node_names_and_namespaces()
        assert navigator.sigint() == 0, navigator.log()
    finally:
        bridge.kill()
        navigator.kill()
    records = read_records(out / "results" / "shard-000-of-001.jsonl")
    assert len(records) == 2
    assert all(r["status"] == "ok" and r["metrics"]["sr"] == 1.0 for r in records)
    assert all(r["policy"] == "expert:ros" for r in records)
    settings = yaml.safe_load((out / "run.json").read_text())["settings"]
    assert (settings["width"], settings["height"], settings["max_steps"]) == (64, 48, 500)


# ---------------------------------------------------------------- 4. real ros2 launch
@pytest.mark.skipif(shutil.which("ros2") is None,
                    reason="ros2 launch needs a full ROS 2 install (launch/ros2cli not on PyPI)")
def test_ros2_launch_smoke(split, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        ["ros2", "launch", PACKAGE, "sim_eval.launch.py", "model:=expert:ros",
         f"split:={split}", f"output_dir:={out}", "namespace:=smoke", "width:=64",
         "height:=48", "sim_settings:={furniture: shapes}"],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=os.environ.copy(),
    )
    try:
        output, _ = proc.communicate(timeout=120)  # the bridge's exit shuts the launch down
        assert proc.returncode == 0, output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    records = read_records(out / "results" / "shard-000-of-001.jsonl")
    assert len(records) == 2 and all(r["metrics"]["sr"] == 1.0 for r in records)
