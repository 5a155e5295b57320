from setuptools import Extension, find_packages, setup

package_name = "seem_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["seem_ros", "seem_ros.*"]),
    package_data={"seem_ros": ["weights/*.pt", "weights/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    # The pose in C (seem_ros/geometry/pose_kernel.c, loaded with ctypes; no Python API). optional:
    # without a compiler the install still succeeds and poses use the numpy code.
    ext_modules=[Extension("seem_ros.geometry._pose_kernel", ["seem_ros/geometry/pose_kernel.c"],
                           extra_compile_args=["-O2", "-std=c99"], libraries=["m"], optional=True)],
    install_requires=["numpy", "torch", "instant-clip-tokenizer", "pillow", "scipy"],
    zip_safe=False,
    maintainer="seem_ros developers",
    description="SEEM segmentation for ROS 2: text, clicks, boxes, scribbles; tracking and poses.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"], "onnx": ["onnxruntime", "onnx", "onnxscript"]},
    entry_points={"console_scripts": [
        "seem_ros_sim_camera = seem_ros.ros.sim_camera_node:main",
        "seem_ros_node = seem_ros.ros.node:main",
    ]},
)
