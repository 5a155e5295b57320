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
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported depth encoding {encoding!r}: expected one of "
                         f"{sorted(_ENCODINGS)}")
    d = np.asarray(depth)
    want, scale = _ENCODINGS[encoding]
    ok_dtype = d.dtype == want or (want is np.float32 and d.dtype == np.float64)
    if not ok_dtype:
        raise ValueError(f"depth encoding {encoding!r} needs a {np.dtype(want).name} array, "
                         f"got {d.dtype}")
    if d.ndim != 2:
        raise ValueError(f"depth image must be 2-D [H,W], got shape {d.shape}")
    out = d.astype(np.float32) * np.float32(scale) if scale != 1.0 else d.astype(np.float32, copy=True)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(out) | (out <= max(min_range, 0.0)) | (out > max_range)
    out[bad] = np.nan
    return out
