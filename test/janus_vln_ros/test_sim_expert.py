"""The expert:ros policy's pieces that need no running sim_bridge."""

import pytest

from janus_vln_ros.sim_expert import parse_spec, process_namespace


@pytest.mark.parametrize("argv, namespace", [
    (["navigator_node"], "/"),
    (["n", "--ros-args", "-r", "__node:=navigator", "-r", "__ns:=/killed"], "/killed"),
    (["n", "--ros-args", "--remap", "__ns:=tiny", "--params-file", "x.yaml"], "/tiny"),
    (["n", "--ros-args", "-r", "__ns:=/a", "-r", "__ns:=/b"], "/a"),  # the first rule, as rcl
    (["n", "--ros-args", "-r", "navigator:__ns:=/only_me"], "/"),  # node-specific: not ours
    (["n", "-r", "__ns:=/x"], "/"),  # outside --ros-args: a program argument
    (["n", "--ros-args", "-p", "a:=1", "--", "-r", "__ns:=/x"], "/"),
])
def test_process_namespace(argv, namespace):
    assert process_namespace(argv) == namespace


def test_parse_spec():
    assert parse_spec("expert:ros") == "sim_bridge/expert_action"
    assert parse_spec("expert:ros:/other/expert") == "/other/expert"
    with pytest.raises(ValueError, match="expert:ros:<service name>"):
        parse_spec("expert:ros:")
