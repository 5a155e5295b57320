"""sensor_msgs <-> NumPy conversions: pure functions, no node, no cv_bridge.

Reading (message -> array):
    image_from_cdr(buf)      serialized Image (a raw subscription)  -> an Image-like view, no copy
    image_to_rgb(msg)        Image rgb8/bgr8/rgba8/bgra8/mono8      -> [H,W,3] uint8 RGB
    compressed_to_rgb(msg)   CompressedImage jpeg/png (Pillow)      -> [H,W,3] uint8 RGB
    image_to_depth(msg)      Image 16UC1/mono16 (mm) or 32FC1 (m)   -> [H,W] float32 metres, NaN = invalid
    image_to_depth_image(m)  the same, kept in its encoding          -> DepthImage (metres per window)
    image_to_mask(msg)       Image mono8/8UC1                       -> [H,W] bool (nonzero = True)
    camera_info_from_msg(m)  CameraInfo                             -> (K 3x3 float64, width, height)
Building (array -> message):
    rgb_to_image, labels_to_image, depth_to_image, camera_info_to_msg

Readers honour ``step`` (row padding) and ``is_bigendian`` (multi-byte encodings) and raise
``ConversionError`` (a ValueError) for anything they cannot interpret, rather than returning garbage.
Where no conversion is needed the returned array is a read-only view of ``msg.data`` (zero copy);
copy it to modify it.

Builders fill ``data`` through ``array.array('B').frombytes``: one memcpy. rclpy stores ``data`` as
``array.array('B')``; assigning an ndarray or, with ROS_PYTHON_CHECK_FIELDS=1, a bytes object makes
the generated setter walk every byte in Python (100+ ms at 720p).
"""
from __future__ import annotations

import array
import io
import struct
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from ..geometry.depth import DepthImage

# encoding -> (channels, channel order to reach RGB; None = grey to replicate)
RGB_ENCODINGS = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)),
                 "bgra8": (4, (2, 1, 0)), "mono8": (1, None)}
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
MASK_ENCODINGS = ("mono8", "8UC1")
LABEL_ENCODINGS = {"16UC1": np.uint16, "mono16": np.uint16, "mono8": np.uint8, "8UC1": np.uint8}
MM_PER_M = 1000.0


class ConversionError(ValueError):
    """A message (or array) that cannot be converted; the message says why."""


# ----------------------------------------------------------------------------------------------
# Reading


def _unsupported(encoding: str, supported, what: str) -> ConversionError:
    return ConversionError(f"unsupported {what} encoding {encoding!r}; supported: {', '.join(supported)}")


def _pixels(msg, channels: int, dtype) -> np.ndarray:
    """[H, W, channels] view of msg.data in `dtype` (its byte order from is_bigendian), after
    checking the geometry against the buffer."""
    dt = np.dtype(dtype)
    if dt.itemsize > 1:
        dt = dt.newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ConversionError(f"{msg.encoding} image has zero size ({w}x{h})")
    row = w * channels * dt.itemsize
    if step < row:
        raise ConversionError(f"{msg.encoding} image: step {step} is smaller than width {w} x "
                              f"{channels * dt.itemsize} bytes per pixel = {row}")
    buf = np.frombuffer(msg.data, np.uint8)
    if buf.size < h * step:
        raise ConversionError(f"{msg.encoding} image {w}x{h}, step {step}: data has {buf.size} bytes, "
                              f"needs height x step = {h * step}")
    rows = buf[:h * step].reshape(h, step)[:, :row]          # drops row padding (still a view)
    # .view needs a contiguous last axis only; rows[:, :row] has one whatever the step.
    out = rows.view(dt).reshape(h, w, channels)
    out.flags.writeable = False
    return out


_CDR_U32, _CDR_2U32, _CDR_STAMP = struct.Struct("<I"), struct.Struct("<II"), struct.Struct("<iI")


@dataclass
class ImageView:
    """A sensor_msgs/Image read straight from its serialized bytes: the fields the readers below
    use, `data` a memoryview of the buffer."""
    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


def image_from_cdr(buf: bytes) -> ImageView:
    """The Image in `buf` as a raw subscription (create_subscription(..., raw=True)) delivers it:
    CDR with its 4-byte encapsulation header. Why: rclpy's own deserialization copies the pixels
    into an array.array and builds the message in Python, 0.3 ms of the node's 640x480 frame
    (benchmarks/transport_bench). Little-endian CDR (what x86 and ARM publishers send); other
    encapsulations go through rclpy. Truncated or inconsistent data raises ConversionError."""
    mv = memoryview(buf)
    if len(mv) < 4:
        raise ConversionError(f"serialized image of {len(mv)} bytes")
    if mv[0] != 0 or mv[1] != 1:                    # not little-endian CDR: rclpy reads it
        from rclpy.serialization import deserialize_message
        try:
            return deserialize_message(bytes(buf), Image)
        except Exception as e:
            raise ConversionError(f"cannot deserialize the image: {e}") from None
    o = 4

    def align(o):                                     # CDR aligns to the payload's start
        return 4 + ((o - 4 + 3) & ~3)

    def string(o):
        n = _CDR_U32.unpack_from(mv, o)[0]
        if n < 1 or o + 4 + n > len(mv):
            raise ConversionError("serialized image: a string runs past the data")
        return bytes(mv[o + 4:o + 3 + n]).decode("utf-8", "replace"), o + 4 + n

    try:
        sec, nanosec = _CDR_STAMP.unpack_from(mv, o)
        frame_id, o = string(o + 8)
        o = align(o)
        height, width = _CDR_2U32.unpack_from(mv, o)
        encoding, o = string(o + 8)
        is_bigendian = mv[o]
        o = align(o + 1)
        step, n = _CDR_2U32.unpack_from(mv, o)
    except (struct.error, IndexError):
        raise ConversionError(f"serialized image of {len(mv)} bytes is truncated") from None
    o += 8
    if o + n > len(mv):
        raise ConversionError(f"serialized image: {n} data bytes announced, {len(mv) - o} present")
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return ImageView(header, height, width, encoding, is_bigendian, step, mv[o:o + n])


def image_to_rgb(msg: Image) -> np.ndarray:
    """[H,W,3] uint8 RGB from an rgb8, bgr8, rgba8, bgra8 or mono8 Image (alpha dropped, grey
    replicated). A read-only view of msg.data for rgb8 without padding; a copy otherwise."""
    enc = msg.encoding
    if enc not in RGB_ENCODINGS:
        raise _unsupported(enc, RGB_ENCODINGS, "colour")
    channels, order = RGB_ENCODINGS[enc]
    px = _pixels(msg, channels, np.uint8)
    if order == (0, 1, 2) and channels == 3 and px.flags.c_contiguous:
        return px
    # One strided copy per channel: ~1.3 ms at 720p, where fancy indexing (px[..., [2, 1, 0]])
    # or a reversed-slice copy take 7-13 ms.
    out = np.empty(px.shape[:2] + (3,), np.uint8)
    for i, c in enumerate(order or (0, 0, 0)):
        out[..., i] = px[..., c]
    return out


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """[H,W,3] uint8 RGB from a jpeg or png CompressedImage (as image_transport's `compressed`
    plugin publishes: format "jpeg", "png" or "bgr8; jpeg compressed bgr8"; the file itself is in
    standard RGB order). Needs Pillow. Corrupt or truncated data raises ConversionError."""
    fmt = (msg.format or "").lower()
    if "compresseddepth" in fmt:
        raise ConversionError(f"unsupported compressed format {msg.format!r} (compressedDepth); "
                              "supported: jpeg, png")
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ConversionError(f"unsupported compressed format {msg.format!r}; supported: jpeg, png")
    try:
        from PIL import Image as PILImage
    except ImportError as e:                                  # pragma: no cover - depends on install
        raise ConversionError("decoding CompressedImage needs Pillow (pip install pillow)") from e
    data = bytes(msg.data)
    if not data:
        raise ConversionError("CompressedImage has no data")
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            if img.format not in ("JPEG", "PNG"):
                raise ConversionError(f"CompressedImage holds {img.format}, not jpeg or png")
            img.load()                                        # decodes now: truncation raises here
            if img.mode in ("I", "I;16", "I;16B", "F"):       # 16-bit/float PNG: depth, not colour
                raise ConversionError(f"CompressedImage is a {img.mode} image, not 8-bit colour or grey")
            rgb = np.asarray(img.convert("RGB"))
    except ConversionError:
        raise
    except Exception as e:                                    # PIL raises OSError, SyntaxError, ...
        raise ConversionError(f"cannot decode {msg.format or 'compressed'} image: {e}") from e
    return rgb


def image_to_depth(msg: Image) -> np.ndarray:
    """[H,W] float32 metres from 16UC1/mono16 (millimetres) or 32FC1 (metres). Invalid readings
    (0, negative, NaN, +-inf) become NaN, so that consumers have a single test (np.isfinite)."""
    return image_to_depth_image(msg).metres()


def image_to_depth_image(msg: Image) -> DepthImage:
    """The depth kept in its encoding (a view of msg.data where the byte order allows), for a
    user that converts only the windows it reads (poses: each object's box)."""
    enc = msg.encoding
    if enc in ("16UC1", "mono16"):
        return DepthImage(_pixels(msg, 1, np.uint16)[..., 0], enc, max_range=np.inf)
    if enc == "32FC1":
        return DepthImage(_pixels(msg, 1, np.float32)[..., 0], enc, max_range=np.inf)
    raise _unsupported(enc, DEPTH_ENCODINGS, "depth")


def image_to_mask(msg: Image) -> np.ndarray:
    """[H,W] bool from a mono8 / 8UC1 Image: nonzero pixels are True."""
    if msg.encoding not in MASK_ENCODINGS:
        raise _unsupported(msg.encoding, MASK_ENCODINGS, "mask")
    return _pixels(msg, 1, np.uint8)[..., 0] != 0


def image_to_labels(msg: Image) -> np.ndarray:
    """[H,W] label image (uint16 for 16UC1/mono16, uint8 for mono8/8UC1), native byte order."""
    if msg.encoding not in LABEL_ENCODINGS:
        raise _unsupported(msg.encoding, LABEL_ENCODINGS, "label")
    dtype = LABEL_ENCODINGS[msg.encoding]
    return _pixels(msg, 1, dtype)[..., 0].astype(dtype)


def camera_info_from_msg(msg: CameraInfo) -> Tuple[np.ndarray, int, int]:
    """(K [3,3] float64, width, height). An all-zero K (uncalibrated camera) raises."""
    K = np.asarray(msg.k, np.float64).reshape(3, 3)
    if not (K[0, 0] > 0 and K[1, 1] > 0 and np.all(np.isfinite(K))):
        raise ConversionError(f"CameraInfo has no usable intrinsics (fx={K[0, 0]}, fy={K[1, 1]}): uncalibrated?")
    if msg.width <= 0 or msg.height <= 0:
        raise ConversionError(f"CameraInfo has zero size ({msg.width}x{msg.height})")
    return K, int(msg.width), int(msg.height)


# ----------------------------------------------------------------------------------------------
# Building


def _bytes_field(arr: np.ndarray) -> array.array:
    """array.array('B') holding arr's bytes: one copy, and the fast path of rclpy's setter."""
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return out


def _image(arr: np.ndarray, header: Optional[Header], encoding: str) -> Image:
    arr = np.ascontiguousarray(arr)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.strides[0])
    msg.data = _bytes_field(arr)
    return msg


def _check_2d(arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConversionError(f"{what} must be a non-empty [H,W] array, got shape {arr.shape}")
    return arr


def rgb_to_image(rgb: np.ndarray, header: Optional[Header] = None) -> Image:
    """rgb8 Image from an [H,W,3] uint8 RGB array."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ConversionError(f"rgb must be a non-empty [H,W,3] array, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ConversionError(f"rgb must be uint8, got {rgb.dtype}")
    return _image(rgb, header, "rgb8")


def labels_to_image(labels: np.ndarray, header: Optional[Header] = None, encoding: str = "16UC1") -> Image:
    """A label image (instance ids, class indices): 16UC1/mono16 (uint16) or mono8/8UC1 (uint8),
    little-endian. Values outside the encoding's range raise instead of wrapping around."""
    if encoding not in LABEL_ENCODINGS:
        raise _unsupported(encoding, LABEL_ENCODINGS, "label")
    labels = _check_2d(labels, "labels")
    dtype = np.dtype(LABEL_ENCODINGS[encoding])
    if labels.dtype != dtype:
        if labels.dtype.kind not in "iub":
            raise ConversionError(f"labels must be integers, got {labels.dtype}")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi > np.iinfo(dtype).max:
            raise ConversionError(f"labels span [{lo}, {hi}], outside {encoding} (0..{np.iinfo(dtype).max})")
        labels = labels.astype(dtype)
    return _image(labels.astype(dtype.newbyteorder("<"), copy=False), header, encoding)


def depth_to_image(depth_m: np.ndarray, header: Optional[Header] = None, encoding: str = "32FC1") -> Image:
    """Depth Image from [H,W] metres, invalid = 0, NaN, negative or inf (REP 118 conventions):
    32FC1 metres with NaN for invalid, or 16UC1 millimetres (rounded) with 0 for invalid and for
    readings beyond 65.535 m (not representable; clipping would invent a surface)."""
    depth = _check_2d(depth_m, "depth")
    if depth.dtype.kind != "f":
        depth = depth.astype(np.float32)
    if encoding not in ("32FC1", "16UC1"):
        raise _unsupported(encoding, ("32FC1", "16UC1"), "depth")
    out = depth.astype("<f4")                                 # a copy: the caller's array is untouched
    with np.errstate(invalid="ignore"):
        invalid = ~(out > 0) | (out == np.inf)                # ~(x > 0) also catches NaN
    if encoding == "32FC1":
        out[invalid] = np.nan
    else:
        out *= np.float32(MM_PER_M)
        out[invalid | (out >= 65535.5)] = 0                   # beyond 65.535 m: invalid, not clipped
        out = np.rint(out).astype("<u2")
    return _image(out, header, encoding)


def camera_info_to_msg(info: Mapping, header: Optional[Header] = None) -> CameraInfo:
    """CameraInfo from the dict of ``seem_ros.sim.camera_info`` (``frame.camera_info``): fields
    named as in the message. ``header`` replaces the dict's; without one the dict's frame_id is used."""
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    else:
        msg.header.frame_id = str(info.get("header", {}).get("frame_id", ""))
    msg.width, msg.height = int(info["width"]), int(info["height"])
    msg.distortion_model = str(info.get("distortion_model", "plumb_bob"))
    msg.d = [float(x) for x in info.get("d", [])]
    for name in ("k", "r", "p"):
        vals = np.asarray(info[name], np.float64).ravel()
        if vals.size != (12 if name == "p" else 9):
            raise ConversionError(f"camera info {name!r} has {vals.size} values")
        setattr(msg, name, vals)
    msg.binning_x, msg.binning_y = int(info.get("binning_x", 0)), int(info.get("binning_y", 0))
    roi = info.get("roi", {})
    msg.roi = RegionOfInterest(x_offset=int(roi.get("x_offset", 0)), y_offset=int(roi.get("y_offset", 0)),
                               height=int(roi.get("height", 0)), width=int(roi.get("width", 0)),
                               do_rectify=bool(roi.get("do_rectify", False)))
    return msg
