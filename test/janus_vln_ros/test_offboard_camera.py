"""Off-board camera: a camera process and a navigator process over CompressedImage 640x480 @ 10 Hz.

Runs :func:`benchmarks.offboard_camera.measure_localhost` for a few seconds: the camera process
renders the embedded simulator and publishes JPEG frames (best effort), the navigator process
drives from them, and this process records its status. The test checks that the frames arrive
and that bandwidth and latency are measured; the numbers themselves are recorded by the
benchmark in benchmarks/results/offboard_camera.md, never asserted.
"""

from __future__ import annotations

import argparse
import math

import pytest

pytest.importorskip("moderngl")  # the camera renders the embedded simulator

from benchmarks.offboard_camera import measure_localhost, report  # noqa: E402


def test_camera_and_navigator_in_two_processes():
    args = argparse.Namespace(seconds=4.0, warmup=1.0, rate=10.0, width=640, height=480,
                              quality=90, mode="localhost", netem="")
    result = measure_localhost(args)
    cam, nav = result["camera"], result["navigator"]
    assert result["navigator_exit"] == 0
    assert cam["frames"] >= 45 and cam["bytes"] > 0
    assert nav["frames_received"] >= 0.9 * cam["frames"], result
    assert nav["frames_invalid"] == 0
    assert nav["steps"] > 0 and all(math.isfinite(v) and v > 0 for v in nav["transport_ms"])
    table, notes = report(result, args)
    assert "MB/s" in table and "p95" in table and "Frames received by the navigator" in notes
