"""Prompt messages -> PromptRequest (pixels of the image they refer to).

seem_ros/Prompt carries everything; std_msgs/String (text), geometry_msgs/Point (rqt_image_view
clicks, pixels) and geometry_msgs/PointStamped (RViz "Publish Point", 3D) are shortcuts for one
new object. Every error is a ConversionError with a message meant for the user."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..perception import MODE_ADD, MODE_REFINE, MODE_REMOVE, NO_REFERENCE_REFINE, PromptRequest, validate_text
from .conversions import ConversionError, image_to_mask, image_to_rgb

MAX_POINTS = 1000              # clicks, and boxes, in one prompt
MAX_VERTICES = 10_000          # in all of a prompt's scribbles and polygons (a drawn one has hundreds)


def stamp_seconds(stamp) -> Optional[float]:
    """A header stamp in seconds; None for a zero stamp ("the newest image")."""
    if stamp.sec == 0 and stamp.nanosec == 0:
        return None
    return stamp.sec + stamp.nanosec * 1e-9


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(a).all():
        raise ConversionError(f"{what} has a NaN or infinite coordinate")
    return a


def from_text(text: str) -> PromptRequest:
    try:
        validate_text(text)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    return PromptRequest(text=text, source="prompt/text")


def from_pixel_point(msg) -> PromptRequest:
    """geometry_msgs/Point: x, y in pixels (rqt_image_view's mouse click; z ignored)."""
    p = _finite(np.array([[msg.x, msg.y]], np.float64), "click")
    return PromptRequest(points=p, point_labels=np.ones(1, np.int64), source="prompt/point")


def project_point(xyz: np.ndarray, K: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A 3D point in the optical frame -> pixel (x, y). Raises for points behind the camera or
    outside the image, with the reason."""
    xyz = _finite(np.asarray(xyz, np.float64), "clicked point")
    if xyz[2] <= 1e-6:
        raise ConversionError(f"clicked point {xyz.round(3).tolist()} is behind the camera (z <= 0 in the optical frame)")
    u = K[0, 0] * xyz[0] / xyz[2] + K[0, 2]
    v = K[1, 1] * xyz[1] / xyz[2] + K[1, 2]
    h, w = size
    if not (0 <= u < w and 0 <= v < h):
        raise ConversionError(f"clicked point projects to pixel ({u:.1f}, {v:.1f}), outside the {w}x{h} image")
    return np.array([[u, v]])


def from_prompt(msg) -> PromptRequest:
    """seem_ros/Prompt -> PromptRequest. Coordinates are checked against the image later (by the
    frame they apply to); here: structure, counts and finite numbers."""
    r = PromptRequest(mode=int(msg.mode), target_id=int(msg.target_id), text=msg.text, label=msg.label,
                      stamp=stamp_seconds(msg.header.stamp), source="prompt")
    if r.mode > MODE_REMOVE:
        raise ConversionError(f"unknown mode {r.mode} (0 add, 1 refine, 2 replace, 3 remove)")
    if r.mode != MODE_ADD and r.target_id == 0:
        raise ConversionError("refine/replace/remove need target_id (the object's id)")
    if r.mode == MODE_REMOVE:
        return r
    if len(msg.points) > MAX_POINTS:
        raise ConversionError(f"{len(msg.points)} points (at most {MAX_POINTS})")
    if msg.points:
        r.points = _finite(np.array([[p.x, p.y] for p in msg.points], np.float64), "point")
        labels = np.asarray(msg.point_labels, np.int64) if len(msg.point_labels) else np.ones(len(msg.points), np.int64)
        if len(labels) != len(msg.points):
            raise ConversionError(f"{len(msg.point_labels)} point_labels for {len(msg.points)} points")
        if ((labels != 0) & (labels != 1)).any():
            raise ConversionError("point_labels must be 0 (negative) or 1 (positive)")
        r.point_labels = labels
    if len(msg.boxes) > MAX_POINTS:
        raise ConversionError(f"{len(msg.boxes)} boxes (at most {MAX_POINTS})")
    if msg.boxes:
        b = _finite(np.array([[x.x_min, x.y_min, x.x_max, x.y_max] for x in msg.boxes], np.float64), "box")
        if ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
            raise ConversionError("box with x_max <= x_min or y_max <= y_min")
        r.boxes = b
    total = sum(len(s.points) for s in msg.scribbles)
    if total > MAX_VERTICES:
        raise ConversionError(f"{len(msg.scribbles)} scribbles with {total} vertices in all (at most {MAX_VERTICES})")
    for s in msg.scribbles:
        if not len(s.points):
            raise ConversionError("scribble with no vertex")
        pts = _finite(np.array([[p.x, p.y] for p in s.points], np.float64), "scribble")
        if s.negative:
            r.negative_scribbles.append(pts)
        elif s.closed:
            if len(pts) < 3:
                raise ConversionError("polygon with fewer than 3 vertices")
            r.polygons.append(pts)
        else:
            r.scribbles.append(pts)
    if msg.mask.width:
        r.mask = image_to_mask(msg.mask)
    if msg.negative_mask.width:
        r.negative_mask = image_to_mask(msg.negative_mask)
    if msg.reference_image.width:
        if r.mode == MODE_REFINE:
            raise ConversionError(NO_REFERENCE_REFINE)
        try:
            r.reference = image_to_rgb(msg.reference_image)
        except ConversionError as e:
            raise ConversionError(f"reference_image: {e}") from None
        if not r.has_visual():
            raise ConversionError("reference_image without the object marked on it (points, boxes, scribbles or mask)")
    if r.text:
        try:
            validate_text(r.text)
        except ValueError as e:
            raise ConversionError(str(e)) from None
    if not r.text.strip() and not r.has_visual():
        raise ConversionError("empty prompt: no text, points, boxes, scribbles or mask")
    return r


def check_pixels(r: PromptRequest, size: Tuple[int, int]) -> PromptRequest:
    """Clicks must fall on the image they are drawn on: the reference image, or the camera's (the
    newest one's size; frames of a stream share it)."""
    h, w = r.reference.shape[:2] if r.reference is not None else size
    if r.points is not None and len(r.points):
        x, y = r.points[:, 0], r.points[:, 1]
        out = (x < 0) | (x >= w) | (y < 0) | (y >= h)
        if out.any():
            i = int(np.argmax(out))
            raise ConversionError(f"click ({x[i]:.1f}, {y[i]:.1f}) is outside the {w}x{h} image")
    return r
