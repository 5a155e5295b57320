"""Process settings for a low-latency image node (called once, first thing in a node's main)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import List

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_process(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Shorter GIL switch interval; NumPy's BLAS on one thread; keep image-sized buffers in
    glibc's heap. Returns whether the allocator settings took effect (False off glibc).

    Why the allocator: every received image, its copies in the DDS and rclpy layers and our
    per-frame arrays are 0.3-3 MB. glibc serves such blocks with a fresh mmap and returns them on
    free, so each frame pays page faults on zeroed pages: 640x480 rgb8 from one Python process to
    another, 4.9 ms one way, 2.9 ms with these settings in the receiver (benchmarks/transport_bench).
    The heap keeps at most `trim_threshold` of free memory before returning it (+10 MB measured).
    Why the switch interval: the executor thread holds the GIL through its bookkeeping after each
    callback; with the default 5 ms the woken worker can wait that long for a new frame (node_bench
    hand-off: 0.5 ms interval 0.7 ms, 0.1 ms interval 0.3 ms; the model's time unchanged)."""
    sys.setswitchinterval(0.0001)
    limit_openblas_threads(1)
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):      # musl and others: no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


# The names OpenBLAS builds export their thread setter under (plain, 64-bit-int, NumPy's wheels).
_OPENBLAS_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads64_",
                     "scipy_openblas_set_num_threads")


def loaded_openblas() -> List[str]:
    """Paths of the OpenBLAS libraries loaded in this process (Linux; [] elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).lower().startswith("lib"))


def limit_openblas_threads(n: int = 1) -> int:
    """Set the thread count of every loaded OpenBLAS (NumPy's, SciPy's) to n; returns how many
    libraries took it. Why: torch already runs its own pool on every core, and after a NumPy
    product big enough to go parallel (a pose's 3 x 4096 matrix-vector product is) OpenBLAS's
    threads spin for a while waiting for more work. On this 2-core machine the next frame's
    encoder then ran at half speed: pipeline_bench at 1280x720, encode 127-163 ms against 63-88
    with one BLAS thread (75-87 ms alone). NumPy's share of a frame is small arrays, for which
    one thread is as fast."""
    done = 0
    for path in loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in _OPENBLAS_SETTERS:
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn(ctypes.c_int(int(n)))
                done += 1
                break
    return done
