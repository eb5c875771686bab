"""Benchmark: sensor_msgs/Image and CompressedImage <-> numpy for a 640x480 camera frame."""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import markdown_table, write_result
from janus_vln_ros.conversions import (
    compressed_to_numpy,
    image_to_rgb,
    numpy_to_compressed,
    numpy_to_image,
)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Return (p50, p95) milliseconds of ``fn()`` over ``repeats`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    rgb = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    rgb = np.clip(rgb.astype(int) + rng.integers(-4, 5, rgb.shape), 0, 255).astype(np.uint8)
    bgr_msg = numpy_to_image(rgb[:, :, ::-1].copy(), "bgr8")
    jpeg_msg = numpy_to_compressed(rgb, "jpeg")
    rows = []
    for name, fn in [
        ("numpy -> Image (rgb8)", lambda: numpy_to_image(rgb, "rgb8")),
        ("Image (bgr8) -> RGB numpy", lambda: image_to_rgb(bgr_msg)),
        ("numpy -> CompressedImage (JPEG q90)", lambda: numpy_to_compressed(rgb, "jpeg")),
        ("CompressedImage (JPEG) -> RGB numpy", lambda: compressed_to_numpy(jpeg_msg)),
    ]:
        p50, p95 = timed(fn, args.repeats)
        rows.append([name, f"{p50:.2f}", f"{p95:.2f}"])
    table = markdown_table(["conversion (640x480)", "p50 ms", "p95 ms"], rows)
    print(table)  # noqa: T201 - a benchmark's table is its output
    if not args.no_write:
        write_result("image_conversion", "Image conversion, 640x480", table)


if __name__ == "__main__":
    main()
