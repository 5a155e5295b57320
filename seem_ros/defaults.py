"""What the package runs with out of the box: the small SEEM trained on the synthetic world
(seem_ros.training) and that world's vocabulary."""
from pathlib import Path

from .sim.scene import CLASS_NAMES

BUNDLED_CHECKPOINT = Path(__file__).parent / "weights" / "seem_tiny.pt"
# The classes the bundled model was trained on (walls and floor are "no object").
BUNDLED_VOCABULARY = tuple(CLASS_NAMES[1:])
