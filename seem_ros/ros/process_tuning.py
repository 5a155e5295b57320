"""Process settings for a low-latency image node (called once, first thing in a node's main)."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_process(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Shorter GIL switch interval; keep image-sized buffers in glibc's heap. Returns whether the
    allocator settings took effect (False off glibc).

    Why the allocator: every received image, its copies in the DDS and rclpy layers and our
    per-frame arrays are 0.3-3 MB. glibc serves such blocks with a fresh mmap and returns them on
    free, so each frame pays page faults on zeroed pages: 640x480 rgb8 from one Python process to
    another, 4.9 ms one way, 2.9 ms with these settings in the receiver (benchmarks/transport_bench).
    The heap keeps at most `trim_threshold` of free memory before returning it (+10 MB measured).
    Why the switch interval: the executor thread holds the GIL through its bookkeeping after each
    callback; with the default 5 ms the woken worker can wait that long for a new frame (node_bench
    hand-off: 0.5 ms interval 0.7 ms, 0.1 ms interval 0.3 ms; the model's time unchanged)."""
    sys.setswitchinterval(0.0001)
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):      # musl and others: no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
