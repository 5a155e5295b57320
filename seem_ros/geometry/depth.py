"""Depth image conversion: ROS depth encodings -> float32 metres with NaN for "no reading"."""
from __future__ import annotations

import numpy as np

DEFAULT_MAX_RANGE = 20.0     # metres; beyond this a reading is treated as invalid

# encoding -> (expected dtype, scale to metres). ROS REP 118: 16UC1 is millimetres, 32FC1 metres.
_ENCODINGS = {"16UC1": (np.uint16, 1e-3), "mono16": (np.uint16, 1e-3), "32FC1": (np.float32, 1.0)}


def depth_to_metres(depth, encoding: str, max_range: float = DEFAULT_MAX_RANGE,
                    min_range: float = 0.0) -> np.ndarray:
    """A [H,W] depth image in a ROS encoding as float32 metres; invalid readings are NaN.

    Accepted: "16UC1" / "mono16" (uint16 millimetres) and "32FC1" (float32 metres; float64 input
    is accepted too and cast). Invalid, hence NaN: 0 (the ROS "no reading" value), negative, NaN,
    +-inf, <= min_range or > max_range. Anything else raises ValueError: silently reinterpreting
    millimetres as metres would put every object 1000x too far away."""
    return DepthImage(depth, encoding, max_range, min_range).metres()


class DepthImage:
    """A depth image kept in its ROS encoding and converted to metres a window at a time: a pose
    reads only its object's box, and converting a whole 640x480 image costs 0.3-1 ms a frame.
    Checked at construction (same errors as `depth_to_metres`); `raw` is not copied."""

    def __init__(self, depth, encoding: str, max_range: float = DEFAULT_MAX_RANGE, min_range: float = 0.0):
        if encoding not in _ENCODINGS:
            raise ValueError(f"unsupported depth encoding {encoding!r}: expected one of "
                             f"{sorted(_ENCODINGS)}")
        d = np.asarray(depth)
        want, scale = _ENCODINGS[encoding]
        dt = d.dtype.newbyteorder("=")            # a big-endian view of a message is fine
        if not (dt == want or (want is np.float32 and dt == np.float64)):
            raise ValueError(f"depth encoding {encoding!r} needs a {np.dtype(want).name} array, "
                             f"got {d.dtype}")
        if d.ndim != 2:
            raise ValueError(f"depth image must be 2-D [H,W], got shape {d.shape}")
        self.raw, self.scale = d, scale
        self.min_range, self.max_range = max(min_range, 0.0), max_range

    @property
    def shape(self):
        return self.raw.shape

    def metres(self, rows=slice(None), cols=slice(None)) -> np.ndarray:
        """float32 metres of raw[rows, cols] (a new array), NaN where there is no valid reading."""
        d = self.raw[rows, cols]
        out = d.astype(np.float32) * np.float32(self.scale) if self.scale != 1.0 else d.astype(np.float32)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(out) | (out <= self.min_range) | (out > self.max_range)
        out[bad] = np.nan
        return out

    def any_valid(self) -> bool:
        """Whether any pixel holds a valid reading, without converting the image."""
        d = self.raw
        if self.scale != 1.0:           # integer millimetres: finite by construction
            lo, hi = self.min_range / self.scale, self.max_range / self.scale
            if hi >= np.iinfo(d.dtype).max:      # one reduction, not two comparisons (0.3 ms at 640x480)
                return bool(d.size) and bool(d.max() > lo)
            return bool(((d > lo) & (d <= hi)).any())
        with np.errstate(invalid="ignore"):
            return bool(((d > self.min_range) & (d <= self.max_range)).any())
