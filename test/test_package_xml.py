"""package.xml declares every ROS package that the ROS-side code imports (so rosdep installs it)."""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROS_NAMES = re.compile(r"^(rclpy|launch|launch_ros|ament_index_python|\w+_(msgs|srvs|interfaces))$")


def imported_ros_packages() -> dict[str, str]:
    """Top-level ROS package -> first file importing it, under janus_vln_ros/ and launch/."""
    found = {}
    for root in ("janus_vln_ros", "launch"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if ROS_NAMES.match(top):
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_package_xml_format_and_build_type():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "janus_vln_ros"
    assert root.findtext("export/build_type") == "ament_python"


def test_every_imported_ros_package_is_declared():
    root = ET.parse(REPO / "package.xml").getroot()
    declared = {e.text for tag in ("depend", "exec_depend") for e in root.iter(tag)}
    imported = imported_ros_packages()
    assert {"rclpy", "sensor_msgs", "launch_ros"} <= set(imported)  # the scan sees imports
    missing = {name: where for name, where in imported.items() if name not in declared}
    assert not missing, f"imported but not in package.xml (<exec_depend>): {missing}"
