"""ament_python package ``janus_vln_ros``: four import roots, one distribution."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "janus_vln_ros"


# What the code needs, as wide as it was tested (README "Dependencies and tested versions").
# The exact versions scripts/setup.sh and CI install are pinned in requirements/*.txt, and
# test/test_setup.py checks that every pin lies inside these ranges. No ROS wheels here: a robot
# with a ROS 2 distro gets rclpy and the messages from apt (package.xml, rosdep); the pip-only
# route takes them from the "ros" extra.
POLICY = [
    "numpy>=1.21,<3",  # 1.21 is Ubuntu 22.04's; a floor above a distro's numpy would replace it
    "pillow>=9.1",  # transformers needs PIL.Image.Resampling
    "pyyaml>=6.0",
    "torch>=2.3,<3",  # 2.3: torch.nn.attention.sdpa_kernel; JetPack 6 ships 2.3 to 2.5
    "transformers>=4.57.1,<6",  # < 4.57 misplaces mRoPE text positions; 5.x: janus_core.compat
    "tokenizers>=0.22",  # janus_core.tokenizer builds the tiny tokenizers with it
    "safetensors>=0.4.3",
]
ROS_WHEELS = [  # ROS 2 Kilted from PyPI (pip-only machines); one consistent set, hence pinned
    "ros-rclpy[fastrtps]==9.1.2",
    "ros-sensor-msgs==5.5.1",
    "ros-geometry-msgs==5.5.1",
    "ros-std-msgs==5.5.1",
    "ros-nav-msgs==5.5.1",
    "ros-std-srvs==5.5.1",
    "ros-diagnostic-msgs==5.5.1",
    "ros-lifecycle-msgs==2.3.0",
    "ros-ament-index-python==1.11.0",
]
OPENCV = "opencv-python-headless>=4.5"  # a distro install has python3-opencv from apt instead
SIM = [
    OPENCV,
    "moderngl>=5.10,<6",
    "glcontext>=2.5",
    "scikit-fmm>=2024.5",
    "scipy>=1.10",
    "imageio>=2.31",
    "imageio-ffmpeg>=0.4.9",
    "tqdm>=4.66",
]
TRAINING = [  # DeepSpeed: requirements/training-gpu.txt
    "accelerate>=1.3",  # transformers' Trainer calls unwrap_model(keep_torch_compile=...)
    "numpy>=1.23",  # transformers' data collators subscript np.ndarray at import
    "torch>=2.6",  # transformers loads optimizer state (resume) only with torch >= 2.6
]

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
    install_requires=POLICY,
    extras_require={
        "ros": ROS_WHEELS + [OPENCV, "rosbags~=0.11.9"],
        "sim": SIM,
        "training": SIM + TRAINING,
        "habitat": [],  # habitat-sim comes from conda: see README "Habitat backend"
        "test": ["pytest>=8"],  # colcon test picks pytest from this extra
    },
    zip_safe=True,
    maintainer="janus_vln_ros maintainers",
    maintainer_email="maintainers@janus-vln-ros.dev",
    description="JanusVLN vision-language navigation for ROS 2 robots and VLN-CE simulation.",
    license="Apache-2.0",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    entry_points={
        "console_scripts": [
            "navigator = janus_vln_ros.navigator_node:main",
            "sim_bridge = janus_vln_ros.sim_bridge_node:main",
            "janus-vln = janus_vln_ros.cli:main",
        ],
    },
)
