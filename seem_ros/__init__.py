"""seem_ros: SEEM (Segment Everything Everywhere All at Once) on a robot."""
__version__ = "0.1.0"


def _extend_path_with_interfaces():
    """Make the rosidl-generated ``seem_ros.msg`` / ``seem_ros.srv`` importable.

    - ROS workspace (colcon, CMakeLists.txt): the generated modules are installed beside this
      file; nothing to do.
    - pip/venv (tools/setup_venv.sh): they are built into ``<venv>/lib/seem_ros_interfaces/seem_ros``,
      a directory that is *not* on sys.path (there it would shadow this package, which pip installs
      editable), and are appended to ``__path__`` here.
    - Running this source tree while a ROS workspace that holds seem_ros is sourced: that install's
      ``seem_ros`` directory (found on sys.path) is appended, the same way.
    Our own directory always stays first in ``__path__``, so our modules are never shadowed.
    """
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(os.path.join(here, "msg")):
        return
    candidates = [os.path.join(sys.prefix, "lib", "seem_ros_interfaces", __name__)]
    candidates += [os.path.join(p or os.curdir, __name__) for p in sys.path]
    seen = {os.path.realpath(p) for p in __path__}
    for cand in candidates:
        real = os.path.realpath(cand)
        if real in seen:
            continue
        if os.path.isdir(os.path.join(real, "msg")) or os.path.isdir(os.path.join(real, "srv")):
            __path__.append(real)
            seen.add(real)


_extend_path_with_interfaces()
del _extend_path_with_interfaces
