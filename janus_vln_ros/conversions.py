"""sensor_msgs Image / CompressedImage <-> numpy, in plain numpy and OpenCV (no cv_bridge).

Supported raw encodings: rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1, 32FC1. Row padding
(``step`` larger than a row) and big-endian data are read correctly; images are always written
little-endian and unpadded. Malformed messages raise :class:`ImageConversionError` naming the
field at fault, so a node can log it and keep running.
"""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

# encoding -> (dtype, channels)
ENCODINGS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


class ImageConversionError(ValueError):
    """A message cannot be converted; the text names the field that is wrong."""


def _layout(encoding: str) -> tuple[np.dtype, int]:
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f"encoding: unsupported image encoding {encoding!r}; supported: {sorted(ENCODINGS)}"
        )
    dtype, channels = ENCODINGS[encoding]
    return np.dtype(dtype), channels


def image_to_numpy(msg: Image) -> np.ndarray:
    """Return the pixels of ``msg`` as HxW (one channel) or HxWxC, native byte order.

    The result is a copy: it does not alias the message buffer.
    """
    dtype, channels = _layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"height/width: empty image ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step: {step} bytes is smaller than one row of {width} {msg.encoding} pixels "
            f"({row_bytes} bytes)"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    needed = step * height
    if data.size < needed:
        raise ImageConversionError(
            f"data: {data.size} bytes, but {height} rows of step {step} need {needed} (truncated)"
        )
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(order))
    pixels = pixels.reshape(height, width, channels).astype(dtype.newbyteorder("="), copy=True)
    return pixels[:, :, 0] if channels == 1 else pixels


def numpy_to_image(
    array: np.ndarray, encoding: str, stamp=None, frame_id: str = ""
) -> Image:
    """Pack ``array`` (HxW or HxWxC matching ``encoding``) into an unpadded little-endian Image."""
    dtype, channels = _layout(encoding)
    array = np.asarray(array)
    shape_ok = array.ndim == 3 and array.shape[2] == channels or (array.ndim == 2 and channels == 1)
    if not shape_ok:
        raise ImageConversionError(
            f"encoding: array of shape {array.shape} does not fit {encoding!r} "
            f"({channels} channel(s))"
        )
    if array.dtype.newbyteorder("=") != dtype:  # any byte order: written little-endian below
        raise ImageConversionError(
            f"encoding: array dtype {array.dtype} does not fit {encoding!r} (needs {dtype})"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageConversionError(f"height/width: empty array of shape {array.shape}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * dtype.itemsize
    msg.data = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<")).tobytes()
    return msg


def to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a colour image in ``encoding`` to HxWx3 uint8 RGB (mono8 is replicated)."""
    if encoding == "rgb8":
        return array
    if encoding == "bgr8":
        return np.ascontiguousarray(array[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(array[:, :, :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(array[:, :, 2::-1])
    if encoding == "mono8":
        return np.repeat(array[:, :, None], 3, axis=2)
    raise ImageConversionError(
        f"encoding: {encoding!r} is not a colour encoding "
        "(expected rgb8, bgr8, rgba8, bgra8 or mono8)"
    )


def image_to_rgb(msg: Image) -> np.ndarray:
    """Return a colour Image message as HxWx3 uint8 RGB."""
    return to_rgb(image_to_numpy(msg), msg.encoding)


def compressed_to_numpy(msg: CompressedImage, unchanged: bool = False) -> np.ndarray:
    """Decode a CompressedImage (JPEG/PNG) to HxWx3 uint8 RGB, or as stored when ``unchanged``.

    ``unchanged`` keeps 16-bit depth PNGs and single-channel images as they are.
    """
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError("data: compressed image is empty")
    flag = cv2.IMREAD_UNCHANGED if unchanged else cv2.IMREAD_COLOR
    decoded = cv2.imdecode(data, flag)
    if decoded is None:
        raise ImageConversionError(
            f"data: cannot decode {data.size} bytes as format {msg.format!r} (corrupt or truncated)"
        )
    if unchanged:
        return decoded if decoded.ndim == 2 else _swap_red_blue(decoded)
    return np.ascontiguousarray(decoded[:, :, ::-1])


def _swap_red_blue(array: np.ndarray) -> np.ndarray:
    """RGB <-> BGR, or RGBA <-> BGRA (alpha stays last), as a contiguous copy."""
    order = [2, 1, 0, 3] if array.shape[2] == 4 else [2, 1, 0]
    return np.ascontiguousarray(array[:, :, order])


def numpy_to_compressed(
    array: np.ndarray, fmt: str = "jpeg", quality: int = 90, stamp=None, frame_id: str = ""
) -> CompressedImage:
    """Encode an RGB, RGBA (JPEG drops alpha) or single-channel (HxW) image as JPEG or PNG."""
    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"format: unsupported {fmt!r}; use 'jpeg' or 'png'")
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = _swap_red_blue(array)  # OpenCV wants BGR(A)
    elif array.ndim != 2:
        raise ImageConversionError(
            f"data: array of shape {array.shape} is neither HxW nor HxWx3/HxWx4"
        )
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", array, params)
    if not ok:
        raise ImageConversionError(
            f"format: OpenCV could not encode a {array.shape} image as {fmt}"
        )
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = fmt
    msg.data = buf.tobytes()
    return msg
