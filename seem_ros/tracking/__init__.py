"""Object memory across frames (tracking): prompt an object once, keep its id on every frame.

    tracker = ObjectTracker(predictor)
    emb = predictor.set_image(rgb)
    tracker.add(ObjectPrompt("text", text="red mug"), emb, stamp)
    for each new frame: tracks = tracker.update(predictor.set_image(rgb), stamp)

No ROS imports here; the node wraps this."""
from .tracker import KINDS, ObjectPrompt, ObjectTracker, Track

__all__ = ["ObjectPrompt", "ObjectTracker", "Track", "KINDS"]
