"""tune_process keeps image-sized buffers in the heap: an image and its copy, freed, are reused
without page faults. Measured in child processes (the setting is process-wide)."""
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from seem_ros.ros.process_tuning import tune_process

    def frame():
        # A received 640x480 image and a copy of it alive together, then both freed: glibc's
        # adaptive threshold keeps them in the heap but trims the freed top, so the next frame
        # faults its pages in again.
        a = np.ones(640 * 480 * 3, np.uint8)
        b = a.copy()
        return int(b[::4096].sum())

    def faults_per_frame():
        for _ in range(3):                       # let the adaptive threshold settle first
            frame()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            frame()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20

    ok = tune_process() if sys.argv[1] == "tuned" else True
    print(faults_per_frame(), ok, sys.getswitchinterval())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings")
def test_tuned_process_reuses_image_sized_buffers_without_page_faults():
    def run(mode):
        out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        faults, ok, interval = out.stdout.split()
        return float(faults), ok == "True", float(interval)

    plain, _, _ = run("plain")
    tuned, ok, interval = run("tuned")
    assert ok and interval == pytest.approx(0.0001)
    # 1.8 MB faulted in again is ~450 page faults a frame; kept in the heap, next to none.
    assert plain > 200 and tuned < 20, (plain, tuned)


BLAS_CHILD = textwrap.dedent("""
    import ctypes, json, sys
    import numpy as np
    from seem_ros.ros.process_tuning import loaded_openblas, tune_process

    def threads():
        out = []
        for p in loaded_openblas():
            lib = ctypes.CDLL(p)
            for s in ("openblas_get_num_threads", "openblas_get_num_threads64_",
                      "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads"):
                if hasattr(lib, s):
                    out.append(getattr(lib, s)())
                    break
        return out

    before = threads()
    tune_process()
    print(json.dumps([before, threads()]))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_tuned_process_runs_numpy_blas_on_one_thread():
    """torch owns the cores; OpenBLAS threads spinning after a NumPy product slowed the encoder."""
    import json
    import os
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")     # as on any multi-core machine, here too
    out = subprocess.run([sys.executable, "-c", BLAS_CHILD], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    before, after = json.loads(out.stdout)
    assert before and all(n == 2 for n in before), before       # NumPy's OpenBLAS was found
    assert all(n == 1 for n in after), after
