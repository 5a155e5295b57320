"""Object memory across frames (tracking): prompt an object once, keep its id on every frame.

    tracker = ObjectTracker(predictor)
    emb = predictor.set_image(rgb)
    tracker.add(ObjectPrompt("text", text="red mug"), emb, stamp)
    for each new frame: tracks = tracker.update(predictor.set_image(rgb), stamp)
    with the camera's pose in a fixed frame (tf) and depth, also:
        tracks = tracker.update(emb, stamp, CameraView(K, T_fixed_cam))
        tracker.place({track id: 3D centroid in the camera frame}, view, stamp)

No ROS imports here; the node wraps this."""
from .tracker import KINDS, CameraView, ObjectPrompt, ObjectTracker, Track

__all__ = ["CameraView", "ObjectPrompt", "ObjectTracker", "Track", "KINDS"]
