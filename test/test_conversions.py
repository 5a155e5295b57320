"""seem_ros.ros.conversions: sensor_msgs <-> NumPy, without DDS (pure functions)."""
import io

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")

from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from seem_ros.ros.conversions import (ConversionError, camera_info_from_msg,  # noqa: E402
                                      camera_info_to_msg, compressed_to_rgb, depth_to_image,
                                      image_to_depth, image_to_labels, image_to_mask, image_to_rgb,
                                      labels_to_image, rgb_to_image)

H, W = 7, 5          # odd sizes: catch width/height and row/column mix-ups


def header():
    h = Header(frame_id="cam_optical")
    h.stamp.sec, h.stamp.nanosec = 1700000000, 42
    return h


def rgb_array(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def raw_image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image built by hand (not by the code under test): rows of `pixels` bytes plus `pad`
    filler bytes (0xAB, so that reading padding as pixels shows)."""
    pixels = np.asarray(pixels)
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1).view(np.uint8)
    step = rows.shape[1] + pad
    buf = np.full((h, step), 0xAB, np.uint8)
    buf[:, :rows.shape[1]] = rows
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=step,
                 data=buf.tobytes())


# ----------------------------------------------------------------------------------------------
# Colour


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_image_to_rgb_each_encoding(encoding, pad):
    rgb = rgb_array()
    alpha = np.full((H, W, 1), 200, np.uint8)
    grey = rgb[..., 0]
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.concatenate([rgb, alpha], 2),
              "bgra8": np.concatenate([rgb[..., ::-1], alpha], 2), "mono8": grey}[encoding]
    out = image_to_rgb(raw_image(pixels, encoding, pad))
    expected = np.repeat(grey[..., None], 3, 2) if encoding == "mono8" else rgb
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_rgb_round_trip_and_header():
    rgb = rgb_array(48, 64)
    msg = rgb_to_image(rgb, header())
    assert (msg.height, msg.width, msg.step, msg.encoding, msg.is_bigendian) == (48, 64, 64 * 3, "rgb8", 0)
    assert msg.header.frame_id == "cam_optical" and msg.header.stamp.nanosec == 42
    assert len(msg.data) == 48 * 64 * 3
    back = image_to_rgb(msg)
    np.testing.assert_array_equal(back, rgb)
    assert not back.flags.writeable                     # a view of msg.data: not to be modified


def test_rgb_to_image_copies_and_accepts_non_contiguous():
    rgb = rgb_array(10, 12)
    view = rgb[:, ::2]                                  # non-contiguous input
    msg = rgb_to_image(view, header())
    assert msg.width == 6 and msg.step == 18
    before = image_to_rgb(msg).copy()
    rgb[:] = 0                                          # the message does not alias the input
    np.testing.assert_array_equal(image_to_rgb(msg), before)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_rgb_to_image_rejects_bad_arrays(bad):
    with pytest.raises(ConversionError):
        rgb_to_image(bad, header())


# ----------------------------------------------------------------------------------------------
# Depth


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
@pytest.mark.parametrize("pad", [0, 3])
def test_depth_16bit_millimetres(encoding, bigendian, pad):
    mm = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 997      # > 255: both bytes matter
    msg = raw_image(mm, encoding, pad, bigendian)
    depth = image_to_depth(msg)
    assert depth.dtype == np.float32 and depth.shape == (H, W)
    assert np.isnan(depth[0, 0])                                      # 0 mm: no reading
    np.testing.assert_allclose(depth.ravel()[1:], mm.ravel()[1:] / 1000.0, rtol=1e-6)


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_32f_metres_and_invalid(bigendian):
    d = np.linspace(0.25, 4.0, H * W, dtype=np.float32).reshape(H, W)
    d[0, :5] = [0.0, -1.0, np.nan, np.inf, -np.inf]
    out = image_to_depth(raw_image(d, "32FC1", pad=4, bigendian=bigendian))
    assert out.dtype == np.float32
    assert np.isnan(out[0, :5]).all()
    np.testing.assert_array_equal(out[1:], d[1:])


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_depth_round_trip(encoding):
    d = np.random.default_rng(1).uniform(0.3, 8.0, (H, W)).astype(np.float32)
    d[0, :5] = [0.0, -1.0, np.nan, np.inf, 70.0]                     # 70 m: beyond 16UC1's range
    msg = depth_to_image(d, header(), encoding)
    assert msg.encoding == encoding and msg.is_bigendian == 0 and msg.header.frame_id == "cam_optical"
    assert msg.step == W * (4 if encoding == "32FC1" else 2)
    back = image_to_depth(msg)
    assert np.isnan(back[0, :4]).all()
    if encoding == "32FC1":
        assert back[0, 4] == 70.0
        np.testing.assert_array_equal(back[1:], d[1:])
    else:
        assert np.isnan(back[0, 4])                                   # invalid, not clipped
        np.testing.assert_allclose(back[1:], d[1:], atol=0.0005 + 1e-6)  # rounded to the mm


def test_depth_from_16bit_array_is_accepted():
    msg = depth_to_image(np.ones((2, 3), np.float64), None, "16UC1")
    np.testing.assert_array_equal(np.frombuffer(msg.data, "<u2"), [1000] * 6)


# ----------------------------------------------------------------------------------------------
# Masks and labels


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mask(encoding):
    m = (np.arange(H * W).reshape(H, W) % 3 == 0).astype(np.uint8) * np.uint8(7)
    out = image_to_mask(raw_image(m, encoding, pad=2))
    assert out.dtype == bool
    np.testing.assert_array_equal(out, m != 0)


@pytest.mark.parametrize("encoding,dtype", [("16UC1", np.uint16), ("mono8", np.uint8)])
def test_labels_round_trip(encoding, dtype):
    labels = (np.arange(H * W).reshape(H, W) * (611 if dtype == np.uint16 else 7)) % np.iinfo(dtype).max
    msg = labels_to_image(labels.astype(np.int64), header(), encoding)
    assert msg.encoding == encoding and msg.step == W * np.dtype(dtype).itemsize
    back = image_to_labels(msg)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, labels)
    # The wire format is little-endian, as is_bigendian says.
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.dtype(dtype).newbyteorder("<")).reshape(H, W), labels)


@pytest.mark.parametrize("encoding,bad", [("mono8", 256), ("16UC1", 65536), ("16UC1", -1)])
def test_labels_out_of_range(encoding, bad):
    labels = np.zeros((2, 2), np.int64)
    labels[1, 1] = bad
    with pytest.raises(ConversionError, match="outside"):
        labels_to_image(labels, header(), encoding)


def test_labels_bad_encoding_and_dtype():
    with pytest.raises(ConversionError, match="32FC1"):
        labels_to_image(np.zeros((2, 2), np.uint16), header(), "32FC1")
    with pytest.raises(ConversionError, match="integers"):
        labels_to_image(np.zeros((2, 2), np.float32), header(), "16UC1")


# ----------------------------------------------------------------------------------------------
# Errors of every reader


READERS = [(image_to_rgb, "rgb8", 3), (image_to_depth, "16UC1", 2), (image_to_depth, "32FC1", 4),
           (image_to_mask, "mono8", 1)]


@pytest.mark.parametrize("reader,encoding", [(image_to_rgb, "yuv422"), (image_to_rgb, "16UC1"),
                                             (image_to_depth, "rgb8"), (image_to_mask, "rgb8"),
                                             (image_to_labels, "32FC1")])
def test_unsupported_encoding_is_named_with_the_supported_ones(reader, encoding):
    msg = Image(height=1, width=1, encoding=encoding, step=4, data=bytes(4))
    with pytest.raises(ConversionError) as e:
        reader(msg)
    assert repr(encoding) in str(e.value) and "supported:" in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("reader,encoding,px", READERS)
def test_data_shorter_than_height_times_step(reader, encoding, px):
    msg = Image(height=H, width=W, encoding=encoding, step=W * px + 2, data=bytes((W * px + 2) * H - 1))
    with pytest.raises(ConversionError, match="height x step"):
        reader(msg)


@pytest.mark.parametrize("reader,encoding,px", READERS)
def test_step_smaller_than_row(reader, encoding, px):
    msg = Image(height=H, width=W, encoding=encoding, step=W * px - 1, data=bytes(W * px * H))
    with pytest.raises(ConversionError, match="step"):
        reader(msg)


@pytest.mark.parametrize("reader,encoding,px", READERS)
@pytest.mark.parametrize("h,w", [(0, W), (H, 0), (0, 0)])
def test_zero_size(reader, encoding, px, h, w):
    msg = Image(height=h, width=w, encoding=encoding, step=w * px, data=b"")
    with pytest.raises(ConversionError, match="zero size"):
        reader(msg)


# ----------------------------------------------------------------------------------------------
# Compressed images


def _encode(arr, fmt, **kw):
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def pil():
    return pytest.importorskip("PIL")


def smooth_rgb(h=48, w=64):
    """A smooth image: JPEG reproduces it closely, unlike noise."""
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1).astype(np.uint8)


def test_compressed_png_is_exact(pil):
    rgb = rgb_array(30, 40)
    out = compressed_to_rgb(CompressedImage(format="png", data=_encode(rgb, "PNG")))
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "bgr8; jpeg compressed bgr8", ""])
def test_compressed_jpeg(pil, fmt):
    rgb = smooth_rgb()
    out = compressed_to_rgb(CompressedImage(format=fmt, data=_encode(rgb, "JPEG", quality=95)))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3                 # lossy, but RGB order kept


def test_compressed_grey_and_rgba_png(pil):
    grey = rgb_array(10, 12)[..., 0]
    out = compressed_to_rgb(CompressedImage(format="png", data=_encode(grey, "PNG")))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, 2))
    rgba = np.concatenate([rgb_array(10, 12), np.full((10, 12, 1), 255, np.uint8)], 2)
    out = compressed_to_rgb(CompressedImage(format="png", data=_encode(rgba, "PNG")))
    np.testing.assert_array_equal(out, rgba[..., :3])


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated_jpeg", "truncated_png", "png_as_gif"])
def test_corrupt_compressed_raises(pil, kind):
    rgb = smooth_rgb()
    data = {"garbage": bytes(range(256)) * 4, "empty": b"",
            "truncated_jpeg": _encode(rgb, "JPEG")[:300],
            "truncated_png": _encode(rgb_array(48, 64), "PNG")[:-200],
            "png_as_gif": _encode(rgb, "GIF")}[kind]
    with pytest.raises(ConversionError):
        compressed_to_rgb(CompressedImage(format="jpeg", data=data))


def test_corrupt_jpeg_body_raises(pil):
    data = bytearray(_encode(smooth_rgb(), "JPEG"))
    data[2:40] = b"\x00" * 38                                        # wreck the headers
    with pytest.raises(ConversionError):
        compressed_to_rgb(CompressedImage(format="jpeg", data=bytes(data)))


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth png", "tiff"])
def test_unsupported_compressed_formats(pil, fmt):
    with pytest.raises(ConversionError, match="unsupported"):
        compressed_to_rgb(CompressedImage(format=fmt, data=_encode(smooth_rgb(), "PNG")))


def test_sixteen_bit_png_is_not_colour(pil):
    data = _encode(np.full((4, 4), 3000, np.uint16), "PNG")
    with pytest.raises(ConversionError):
        compressed_to_rgb(CompressedImage(format="png", data=data))


# ----------------------------------------------------------------------------------------------
# CameraInfo


def test_camera_info_round_trip_from_sim():
    from seem_ros.sim import make_scene, render

    frame = render(make_scene(3, 64, 48), shadows=False, noise=False)
    msg = camera_info_to_msg(frame.camera_info, header())
    assert isinstance(msg, CameraInfo)
    assert (msg.width, msg.height, msg.distortion_model) == (64, 48, "plumb_bob")
    assert msg.header.frame_id == "cam_optical" and msg.header.stamp.sec == 1700000000
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4)[:, :3], frame.K)
    np.testing.assert_array_equal(np.asarray(msg.r).reshape(3, 3), np.eye(3))
    assert list(msg.d) == [0.0] * 5
    K, w, h = camera_info_from_msg(msg)
    np.testing.assert_array_equal(K, frame.K)
    assert (w, h) == (64, 48)
    # Without a header the dict's frame_id is kept.
    assert camera_info_to_msg(frame.camera_info).header.frame_id == frame.camera_info["header"]["frame_id"]


def test_camera_info_uncalibrated_raises():
    with pytest.raises(ConversionError, match="intrinsics"):
        camera_info_from_msg(CameraInfo(width=640, height=480))
    msg = CameraInfo(width=0, height=480)
    msg.k = np.array([500.0, 0, 320, 0, 500, 240, 0, 0, 1])
    with pytest.raises(ConversionError, match="zero size"):
        camera_info_from_msg(msg)


def test_image_from_cdr_reads_what_rclpy_serializes():
    """The raw-subscription reader against rclpy's own serializer: frame_id and encoding lengths
    that exercise every CDR alignment, row padding, both byte-order flags, an empty image; then
    truncated and inconsistent buffers raise ConversionError."""
    from rclpy.serialization import serialize_message
    from seem_ros.ros.conversions import image_from_cdr
    rng = np.random.default_rng(0)
    for k in range(24):
        m = Image()
        m.header.frame_id = "f" * (k % 7)
        m.header.stamp.sec, m.header.stamp.nanosec = int(rng.integers(-5, 2 ** 31 - 1)), int(rng.integers(0, 10 ** 9))
        m.encoding = ["rgb8", "bgr8", "mono8", "rgba8", "16UC1", "32FC1", "x"][k % 7]
        m.is_bigendian = k % 2
        m.height, m.width = int(rng.integers(0, 5)), int(rng.integers(1, 6))
        m.step = m.width * 3 + k % 4
        m.data = rng.integers(0, 256, m.height * m.step, np.uint8).tobytes()
        v = image_from_cdr(serialize_message(m))
        assert (v.header.frame_id, v.header.stamp.sec, v.header.stamp.nanosec) == \
            (m.header.frame_id, m.header.stamp.sec, m.header.stamp.nanosec)
        assert (v.height, v.width, v.encoding, v.is_bigendian, v.step) == \
            (m.height, m.width, m.encoding, m.is_bigendian, m.step)
        assert bytes(v.data) == bytes(m.data)
    m = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))
    m.header.frame_id = "camera"
    buf = serialize_message(m)
    np.testing.assert_array_equal(image_to_rgb(image_from_cdr(buf)), np.zeros((2, 2, 3), np.uint8))
    for bad in (buf[:3], buf[:20], buf[:-1], buf[:4] + b"\xff" * 8):
        with pytest.raises(ConversionError):
            image_from_cdr(bad)
    # Another encapsulation (big-endian CDR, as a big-endian publisher would send): rclpy's reader.
    be = bytearray(buf)
    be[1] = 0
    with pytest.raises(ConversionError, match="deserialize"):
        image_from_cdr(bytes(be))            # the little-endian payload, mislabelled: rejected
