"""Camera messages to the arrays a policy takes (RGB uint8, depth in metres): no node needed.

Used by the navigator's callbacks and by ``janus-vln replay``, so a frame read back from a bag
goes through exactly the conversion it went through on the robot. Malformed messages raise
:class:`janus_vln_ros.conversions.ImageConversionError` naming the field at fault.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from janus_vln_ros.conversions import (
    ImageConversionError,
    compressed_to_numpy,
    image_to_numpy,
    image_to_rgb,
)

# raw depth encodings and the factor that turns their values into metres (REP 118: mm or m)
DEPTH_SCALE = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}


def check_frame_size(width: int, height: int, min_side: int, max_pixels: int) -> None:
    """Refuse absurd camera sizes up front: ImageConversionError naming the size and the limit."""
    if width < min_side or height < min_side:
        raise ImageConversionError(
            f"size: {width}x{height} is smaller than min_image_side {min_side} px on a side "
            "(a broken frame or a misconfigured camera driver)"
        )
    if width * height > max_pixels:
        raise ImageConversionError(
            f"size: {width}x{height} ({width * height / 1e6:.1f} MP) exceeds max_image_pixels "
            f"{max_pixels} ({max_pixels / 1e6:.1f} MP): every frame is shrunk to the model's "
            "input (644x490 for JanusVLN), so run the camera at a smaller mode (e.g. 640x480 or "
            "1280x720) or raise max_image_pixels"
        )


def rgb_from_message(msg: Image | CompressedImage) -> np.ndarray:
    """HxWx3 uint8 RGB from an Image (colour encodings) or a CompressedImage (JPEG/PNG)."""
    if isinstance(msg, CompressedImage):
        rgb = compressed_to_numpy(msg)
    elif isinstance(msg, Image):
        rgb = image_to_rgb(msg)
    else:
        raise TypeError(f"expected sensor_msgs Image or CompressedImage, got {type(msg).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageConversionError(
            f"encoding: decoded image has shape {rgb.shape} and dtype {rgb.dtype}, "
            "expected HxWx3 uint8"
        )
    return rgb


def depth_from_message(msg: Image | CompressedImage) -> tuple[np.ndarray, int]:
    """HxW float32 depth in metres and the number of invalid pixels (NaN, inf, <0) set to 0.

    0 means "no measurement" in the output. 16-bit depth is millimetres (REP 118); a
    CompressedImage must be a 16-bit PNG.
    """
    if isinstance(msg, CompressedImage):
        raw = compressed_to_numpy(msg, unchanged=True)
        if raw.ndim != 2 or raw.dtype != np.uint16:
            raise ImageConversionError(
                f"format: compressed depth must decode to one 16-bit channel, got shape "
                f"{raw.shape} dtype {raw.dtype}"
            )
        scale = 0.001
    elif isinstance(msg, Image):
        if msg.encoding not in DEPTH_SCALE:
            raise ImageConversionError(
                f"encoding: {msg.encoding!r} is not a depth encoding; expected one of "
                f"{sorted(DEPTH_SCALE)}"
            )
        raw = image_to_numpy(msg)
        scale = DEPTH_SCALE[msg.encoding]
    else:
        raise TypeError(f"expected sensor_msgs Image or CompressedImage, got {type(msg).__name__}")
    depth = raw.astype(np.float32) * np.float32(scale)
    invalid = ~np.isfinite(depth) | (depth < 0.0)
    count = int(invalid.sum())
    if count:
        depth[invalid] = 0.0
    return depth, count
