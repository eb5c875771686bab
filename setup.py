"""ament_python package ``janus_vln_ros``: four import roots, one distribution."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "janus_vln_ros"
HERE = Path(__file__).resolve().parent  # colcon runs a symlinked copy


def requirements(name):
    """Read one pinned requirements file from requirements/ (comments dropped)."""
    lines = (HERE / "requirements" / f"{name}.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["janus_core*", "sim_bridge*", "training*", "janus_vln_ros*"]),
    package_data={"janus_core": ["presets/*.yaml"], "sim_bridge": ["assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config",
         glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.json")),
    ],
    python_requires=">=3.10",
    install_requires=requirements("policy"),
    extras_require={
        "ros": requirements("ros"),
        "sim": requirements("sim"),
        "training": requirements("sim") + requirements("training"),
        "habitat": [],  # habitat-sim comes from conda: see README "Habitat backend"
        "dev": requirements("dev"),
        "test": ["pytest==8.3.5"],  # colcon test picks pytest from this extra
    },
    zip_safe=True,
    maintainer="janus_vln_ros maintainers",
    maintainer_email="maintainers@janus-vln-ros.dev",
    description="JanusVLN vision-language navigation for ROS 2 robots and VLN-CE simulation.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "navigator = janus_vln_ros.navigator_node:main",
            "sim_bridge = janus_vln_ros.sim_bridge_node:main",
            "janus-vln = janus_vln_ros.cli:main",
        ],
    },
)
