"""Image <-> numpy conversion: exact round trips, padding, endianness, malformed messages."""

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from janus_vln_ros.conversions import (
    ENCODINGS,
    ImageConversionError,
    compressed_to_numpy,
    image_to_numpy,
    image_to_rgb,
    numpy_to_compressed,
    numpy_to_image,
)

RNG = np.random.default_rng(0)


def random_array(encoding, height=7, width=5):
    dtype, channels = ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype is np.float32:
        return RNG.normal(size=shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8", "16UC1", "32FC1"])
def test_round_trip_is_exact(encoding):
    array = random_array(encoding)
    msg = numpy_to_image(array, encoding, frame_id="cam")
    assert msg.step == array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    back = image_to_numpy(msg)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert msg.header.frame_id == "cam"


@pytest.mark.parametrize("encoding", ["rgb8", "16UC1", "32FC1"])
def test_row_padding_is_skipped(encoding):
    array = random_array(encoding)
    row = array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    padded = np.zeros((array.shape[0], row + 64), np.uint8)
    padded[:, :row] = np.ascontiguousarray(array).view(np.uint8).reshape(array.shape[0], row)
    padded[:, row:] = 0xAB
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0,
                step=row + 64)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(image_to_numpy(msg), array)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "mono16"])
def test_big_endian_data(encoding):
    array = random_array(encoding)
    big = array.astype(array.dtype.newbyteorder(">"))
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=1,
                step=array.shape[1] * array.itemsize)
    msg.data = big.tobytes()
    out = image_to_numpy(msg)
    np.testing.assert_array_equal(out, array)
    assert out.dtype.byteorder in ("=", "|", "<")


def test_result_does_not_alias_message():
    array = random_array("rgb8")
    msg = numpy_to_image(array, "rgb8")
    out = image_to_numpy(msg)
    out[:] = 0
    np.testing.assert_array_equal(image_to_numpy(msg), array)


def test_bgr_to_rgb_matches_opencv():
    import cv2

    bgr = random_array("bgr8")
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(bgr, "bgr8")),
                                  cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def make_msg(**fields):
    msg = Image(height=4, width=4, encoding="rgb8", is_bigendian=0, step=12)
    msg.data = bytes(48)
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    "fields, field_name",
    [
        ({"step": 8}, "step"),
        ({"data": bytes(47)}, "data"),
        ({"encoding": "yuv422_weird"}, "encoding"),
        ({"height": 0, "data": b""}, "height"),
        ({"width": 0}, "height/width"),
    ],
)
def test_malformed_messages_name_the_field(fields, field_name):
    with pytest.raises(ImageConversionError, match=field_name):
        image_to_numpy(make_msg(**fields))


def test_numpy_to_image_rejects_wrong_dtype_and_shape():
    with pytest.raises(ImageConversionError, match="dtype"):
        numpy_to_image(np.zeros((4, 4, 3), np.float32), "rgb8")
    with pytest.raises(ImageConversionError, match="shape"):
        numpy_to_image(np.zeros((4, 4), np.uint8), "rgb8")


def test_compressed_png_is_lossless_and_jpeg_close():
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    rgb[..., 1] = 90
    rgb[..., 2] = np.linspace(255, 0, 48, dtype=np.uint8)[:, None]
    np.testing.assert_array_equal(compressed_to_numpy(numpy_to_compressed(rgb, "png")), rgb)
    jpeg = compressed_to_numpy(numpy_to_compressed(rgb, "jpeg", quality=95))
    assert jpeg.shape == rgb.shape and np.abs(jpeg.astype(int) - rgb).max() <= 12


def test_compressed_depth_png_round_trip():
    depth = random_array("16UC1", 16, 16)
    msg = numpy_to_compressed(depth, "png")
    np.testing.assert_array_equal(compressed_to_numpy(msg, unchanged=True), depth)


def test_corrupt_or_empty_jpeg_is_rejected():
    good = numpy_to_compressed(np.full((16, 16, 3), 128, np.uint8), "jpeg")
    bad = CompressedImage(format="jpeg")
    bad.data = bytes(good.data)[:20]
    with pytest.raises(ImageConversionError, match="data"):
        compressed_to_numpy(bad)
    with pytest.raises(ImageConversionError, match="empty"):
        compressed_to_numpy(CompressedImage(format="jpeg"))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "mono16"])
def test_big_endian_array_is_written_little_endian(encoding):
    array = random_array(encoding)
    msg = numpy_to_image(array.astype(array.dtype.newbyteorder(">")), encoding)
    assert msg.is_bigendian == 0
    np.testing.assert_array_equal(image_to_numpy(msg), array)


def test_compressed_rgba_keeps_channel_order():
    rgba = random_array("rgba8", 8, 8)
    png = compressed_to_numpy(numpy_to_compressed(rgba, "png"), unchanged=True)
    np.testing.assert_array_equal(png, rgba)  # lossless, alpha last
    np.testing.assert_array_equal(compressed_to_numpy(numpy_to_compressed(rgba, "png")),
                                  rgba[:, :, :3])
    with pytest.raises(ImageConversionError, match="data"):
        numpy_to_compressed(np.zeros((4, 4, 2), np.uint8), "png")
