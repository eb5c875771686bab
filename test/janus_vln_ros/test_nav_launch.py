"""launch/nav.launch.py without the launch tools (not installable here; ros2-env.md 8c).

1. Static contract: the launch file is parsed with ``ast`` (never imported). Every executable is
   a console script installed to lib/<pkg>, every file it names is installed by data_files,
   every LaunchConfiguration is a declared argument, and the YAML keys and launch parameters
   are exactly the parameters the node declares.
2. Launch-equivalent, not ``ros2 launch``: the same executable started with the same node name,
   namespace, params file, parameter overrides and environment as the launch file gives it.
3. A real ``ros2 launch`` smoke test, skipped unless a full ROS 2 install provides ``ros2``.
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from geometry_msgs.msg import TwistStamped
from ros_harness import (
    REPO,
    NodeProcess,
    RosHarness,
    installed_navigator,
    navigator_command,
    param_arg,
    qos,
    wait_until,
)
from sensor_msgs.msg import Image
from std_msgs.msg import String

from janus_vln_ros.conversions import numpy_to_image
from janus_vln_ros.params import DEFAULTS, PARAMETER_NAMES, NavigatorParams

LAUNCH = REPO / "launch" / "nav.launch.py"
PACKAGE = "janus_vln_ros"


# ---------------------------------------------------------------- AST helpers
def call_name(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and call_name(n) == name]


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def const(node):
    return node.value if isinstance(node, ast.Constant) else None


def package_path(node) -> str | None:
    """``PathJoinSubstitution([FindPackageShare(pkg) | share, "a", "b"])`` -> "a/b"."""
    if isinstance(node, ast.Call) and call_name(node) == "PathJoinSubstitution":
        parts = node.args[0].elts
        return "/".join(const(p) for p in parts[1:])
    return None


class LaunchContract:
    """What nav.launch.py declares, read from its syntax tree."""

    def __init__(self, path: Path):
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.arguments: dict[str, ast.AST | None] = {}
        for call in calls(self.tree, "DeclareLaunchArgument"):
            self.arguments[const(call.args[0])] = keyword(call, "default_value")
        self.configurations = {const(c.args[0]) for c in calls(self.tree, "LaunchConfiguration")}
        self.nodes = []
        for call in calls(self.tree, "Node"):
            params = keyword(call, "parameters")
            files, overrides = [], {}
            for item in params.elts if params is not None else []:
                if isinstance(item, ast.Dict):
                    for k, v in zip(item.keys, item.values):
                        overrides[const(k)] = v
                else:
                    files.append(item)
            self.nodes.append({
                "package": const(keyword(call, "package")),
                "executable": const(keyword(call, "executable")),
                "name": const(keyword(call, "name")),
                "namespace": keyword(call, "namespace"),
                "files": files,
                "overrides": overrides,
            })
        self.environment = {
            const(c.args[0]): c.args[1] for c in calls(self.tree, "SetEnvironmentVariable")
        }

    def default_path(self, argument: str) -> str | None:
        """The package-relative path an argument defaults to (through EnvironmentVariable)."""
        node = self.arguments[argument]
        if isinstance(node, ast.Call) and call_name(node) == "EnvironmentVariable":
            node = keyword(node, "default_value")
        return package_path(node)

    def resolve(self, value, args: dict[str, str]):
        """A parameter override's value and declared type, given launch argument values."""
        value_type = None
        if isinstance(value, ast.Call) and call_name(value) == "ParameterValue":
            value_type = keyword(value, "value_type").id
            value = value.args[0]
        if isinstance(value, ast.Call) and call_name(value) == "LaunchConfiguration":
            text = args[const(value.args[0])]
        else:
            text = const(value)
        if value_type == "bool":
            return {"true": True, "false": False}[text.lower()], bool
        if value_type == "str":
            return text, str
        return yaml.safe_load(text), value_type


def setup_py():
    tree = ast.parse((REPO / "setup.py").read_text())
    call = calls(tree, "setup")[0]
    scripts = {}
    entry_points = keyword(call, "entry_points")
    for k, v in zip(entry_points.keys, entry_points.values):
        if const(k) == "console_scripts":
            for item in v.elts:
                name, target = (s.strip() for s in const(item).split("="))
                scripts[name] = target
    installed = {}  # repo-relative pattern -> destination
    for entry in keyword(call, "data_files").elts:
        dest, sources = entry.elts
        (dest,) = strings(dest)
        for pattern in strings(sources):
            installed[pattern] = dest
    return scripts, installed


def strings(node) -> list[str]:
    """The path strings in a data_files entry: literals, f-strings on PACKAGE, glob(), +, lists."""
    if isinstance(node, (ast.Constant, ast.JoinedStr)):
        return [eval(compile(ast.Expression(node), "setup.py", "eval"), {"PACKAGE": PACKAGE})]
    if isinstance(node, ast.Call) and call_name(node) == "glob":
        return strings(node.args[0])
    if isinstance(node, ast.BinOp):
        return strings(node.left) + strings(node.right)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [s for e in node.elts for s in strings(e)]
    raise AssertionError(f"unexpected data_files entry in setup.py: {ast.unparse(node)}")


def installed_as(relative: str, installed: dict[str, str]) -> str | None:
    for pattern, dest in installed.items():
        if fnmatch.fnmatch(relative, pattern):
            return f"{dest}/{Path(relative).name}"
    return None


@pytest.fixture(scope="module")
def contract():
    return LaunchContract(LAUNCH)


# ---------------------------------------------------------------- 1. static contract
def test_launch_file_is_not_imported_but_parses(contract):
    assert contract.nodes, "nav.launch.py starts no Node"
    assert calls(contract.tree, "generate_launch_description") == []  # defined, not called
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
               for n in contract.tree.body)


def test_executables_are_installed_console_scripts(contract):
    scripts, _ = setup_py()
    package_xml = (REPO / "package.xml").read_text()
    assert f"<name>{PACKAGE}</name>" in package_xml
    for node in contract.nodes:
        assert node["package"] == PACKAGE
        assert node["executable"] in scripts, f"{node['executable']} is not a console script"
        module, function = scripts[node["executable"]].split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["install"]["install_scripts"] == f"$base/lib/{PACKAGE}"  # where ros2 run looks
    assert cfg["develop"]["script_dir"] == f"$base/lib/{PACKAGE}"


def test_named_files_exist_and_are_installed(contract):
    _, installed = setup_py()
    expected = f"share/{PACKAGE}/launch/nav.launch.py"
    assert installed_as("launch/nav.launch.py", installed) == expected
    for argument in ("params_file", "fastdds_profile"):
        relative = contract.default_path(argument)
        assert relative, f"argument {argument} has no package-relative default"
        assert (REPO / relative).is_file(), f"{relative} (default of {argument}) does not exist"
        assert installed_as(relative, installed) == f"share/{PACKAGE}/{relative}", (
            f"{relative} is not installed by data_files"
        )
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in contract.environment


def test_launch_configurations_are_declared_arguments(contract):
    assert contract.configurations <= set(contract.arguments), (
        f"undeclared: {contract.configurations - set(contract.arguments)}"
    )
    unused = set(contract.arguments) - contract.configurations
    assert not unused, f"declared but unused launch arguments: {unused}"
    for needed in ("model", "params_file", "enable_stamped_cmd_vel", "image_topic",
                   "instruction_topic", "namespace"):
        assert needed in contract.arguments
    assert contract.arguments["model"] is None, "model must be required (no default)"


def test_yaml_keys_match_declared_parameters(harness):
    from janus_vln_ros.navigator_node import NavigatorNode

    data = yaml.safe_load((REPO / "config" / "navigator.yaml").read_text())
    assert list(data) == ["/**/navigator"]
    values = data["/**/navigator"]["ros__parameters"]
    node = NavigatorNode(context=harness.context, namespace="/static_check")
    plain = rclpy.create_node("plain", context=harness.context, namespace="/static_check")
    try:  # what the navigator declares beyond what every rclpy node has
        declared = set(node.list_parameters([], 0).names) - set(plain.list_parameters([], 0).names)
    finally:
        node.destroy_node()
        plain.destroy_node()
    assert declared == set(PARAMETER_NAMES)
    assert set(values) == declared, (
        f"missing from YAML: {declared - set(values)}; unknown in YAML: {set(values) - declared}"
    )
    for name, value in values.items():
        # ROS parameters are strictly typed: 1 for a float parameter would fail at start-up
        assert type(value) is type(DEFAULTS[name]), f"{name}: {value!r} vs {DEFAULTS[name]!r}"
    NavigatorParams.from_mapping(values)  # and every value is valid


def test_launch_overrides_match_declared_parameters(contract):
    (node,) = contract.nodes
    args = {k: const(v) for k, v in contract.arguments.items() if isinstance(v, ast.Constant)}
    args["model"] = "forward"
    for name, value in node["overrides"].items():
        assert name in PARAMETER_NAMES, f"launch sets undeclared parameter {name}"
        resolved, value_type = contract.resolve(value, args)
        assert value_type is type(DEFAULTS[name]), f"{name}: launch type {value_type}"
        NavigatorParams().replace(**{name: resolved})


# ---------------------------------------------------------------- 2. launch-equivalent run
@pytest.fixture(scope="module")
def harness():
    h = RosHarness("launch_test")
    yield h
    h.close()


def share_file(relative: str) -> Path:
    """The installed copy when the navigator runs from install/, else the source file."""
    installed = REPO / "install" / PACKAGE / "share" / PACKAGE / relative
    if installed_navigator() is not None and installed.exists():
        return installed
    return REPO / relative


def launch_equivalent_command(contract, overrides: dict[str, str]):
    """The navigator command line (and environment) that nav.launch.py would produce."""
    (node,) = contract.nodes
    args = {k: const(v) for k, v in contract.arguments.items() if isinstance(v, ast.Constant)}
    args.update(overrides)
    namespace = args[node["namespace"].args[0].value]
    command = navigator_command() + ["--ros-args", "-r", f"__node:={node['name']}"]
    if namespace:
        command += ["-r", f"__ns:=/{namespace.strip('/')}"]
    for item in node["files"]:
        (name,) = (const(a) for a in item.args)
        path = args.get(name) or share_file(contract.default_path(name))
        command += ["--params-file", str(path)]
    for name, value in node["overrides"].items():
        resolved, _ = contract.resolve(value, args)
        command += ["-p", f"{name}:={param_arg(resolved)}"]
    command += ["--log-level", args["log_level"]]
    profile = share_file(contract.default_path("fastdds_profile"))
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile)}
    return command, env


def test_launch_equivalent_process(contract, harness):
    """Launch-equivalent, not ``ros2 launch``: same executable, name, params and environment."""
    command, env = launch_equivalent_command(contract, {
        "model": "constant:MOVE_FORWARD", "namespace": "leq", "enable_stamped_cmd_vel": "true",
    })
    cmd = harness.record(TwistStamped, "/leq/cmd_vel")
    instruction = harness.publisher(String, "/leq/instruction", qos(1, latched=True))
    camera = harness.publisher(Image, "/leq/camera/image_raw", qos(1))
    proc = NodeProcess(command, env=env)
    try:
        assert wait_until(lambda: ("navigator", "/leq") in
                          harness.node.get_node_names_and_namespaces(), 15.0), proc.log()
        assert wait_until(lambda: harness.get_state("/leq/navigator") == "active", 10.0)
        instruction.publish(String(data="go straight"))
        image = numpy_to_image(np.zeros((24, 32, 3), np.uint8), "rgb8")

        def moving():
            camera.publish(image)
            return any(m.twist.linear.x > 0 for m in cmd.messages)

        assert wait_until(moving, 10.0, period=0.05), proc.log()
        max_linear = yaml.safe_load((REPO / "config" / "navigator.yaml").read_text())[
            "/**/navigator"]["ros__parameters"]["max_linear_speed"]
        assert all(0.0 <= m.twist.linear.x <= max_linear for m in cmd.messages)
        assert all(m.header.frame_id == "base_link" for m in cmd.messages)
        assert proc.sigint() == 0, proc.log()
        time.sleep(0.2)
        last = cmd.last().twist
        assert last.linear.x == 0.0 and last.angular.z == 0.0
    finally:
        proc.kill()


def test_launch_equivalent_requires_model(contract):
    """Without model:= the node starts, but configure fails loudly (nothing drives)."""
    command, env = launch_equivalent_command(contract, {"model": "", "namespace": "nomodel"})
    proc = NodeProcess(command, env=env)
    try:
        assert proc.wait_for_log("configure failed: cannot build policy", 15.0), proc.log()
        assert "model is empty" in proc.log()
        assert proc.alive()
        assert proc.sigint() == 0
    finally:
        proc.kill()


# ---------------------------------------------------------------- 3. real ros2 launch
@pytest.mark.skipif(shutil.which("ros2") is None,
                    reason="ros2 launch needs a full ROS 2 install (launch/ros2cli not on PyPI)")
def test_ros2_launch_smoke(harness):
    cmd = harness.record(TwistStamped, "/smoke/cmd_vel")
    instruction = harness.publisher(String, "/smoke/instruction", qos(1, latched=True))
    camera = harness.publisher(Image, "/smoke/camera/image_raw", qos(1))
    proc = subprocess.Popen(
        ["ros2", "launch", PACKAGE, "nav.launch.py", "model:=constant:MOVE_FORWARD",
         "namespace:=smoke", "enable_stamped_cmd_vel:=true"],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=os.environ.copy(),
    )
    try:
        instruction.publish(String(data="go"))
        image = numpy_to_image(np.zeros((24, 32, 3), np.uint8), "rgb8")

        def moving():
            camera.publish(image)
            return any(m.twist.linear.x > 0 for m in cmd.messages)

        assert wait_until(moving, 30.0, period=0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        time.sleep(0.2)
        assert cmd.last().twist.linear.x == 0.0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
