"""Test-wide settings: isolate ROS 2 (localhost discovery, a random domain, a temporary log dir).

These must be set before any ``rclpy.init()``, so they live here, at collection time. The domain
id is random per pytest process, so parallel runs on one machine never cross-talk.
"""

import os
import random
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="janus_ros_log_"))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))


def pytest_configure(config):
    """Register the markers used in this suite."""
    config.addinivalue_line("markers", "slow: long-running; excluded unless -m slow is given")


def pytest_collection_modifyitems(config, items):
    """Skip tests marked slow unless they were asked for with ``-m slow``."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow test: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
