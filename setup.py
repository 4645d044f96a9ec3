"""Installs the superglue_ros Python package and the `superglue-ros` console script.

torch has no upper bound: a robot keeps the torch built for its GPU. The CPU
fast path that uses torch internals checks them at run time and steps aside
when they changed. Install a CPU-only torch first where no GPU is present
(see the README), or pip picks the large CUDA build.

Every other range ends before the next release that may break us: the next minor
where minors have (OpenCV: 5.1 changed findEssentialMat on degenerate
samples; rosbags: 0.x minors change its API), else the next major. CI
(`.ci/run`) installs the newest versions in range, so a breaking release
inside a range shows in CI before a user meets it.
"""
import glob

from setuptools import find_packages, setup

package_name = "superglue_ros"

setup(
    name=package_name,
    version="0.1.0",
    description="Real-time SuperPoint + SuperGlue feature matching with a ROS 2 node",
    license="Apache-2.0 (code); official model weights are under Magic Leap's non-commercial licence",
    python_requires=">=3.10",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    package_data={package_name: ["weights/*.pt", "weights/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/msg", sorted(glob.glob("msg/*.msg"))),
        (f"share/{package_name}/launch", sorted(glob.glob("launch/*.py"))),
        (f"share/{package_name}/config", sorted(glob.glob("config/*.yaml"))),
    ],
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24,<3",
        "opencv-python-headless>=4.8,<5.2",
        "tqdm>=4.60,<5",
    ],
    extras_require={
        "eval": ["rosbags>=0.10,<0.12", "matplotlib>=3.7,<4"],
        "onnx": ["onnx>=1.16,<2", "onnxruntime>=1.18,<2"],
        "test": ["pytest>=8", "hypothesis>=6.100", "pyyaml>=6"],
    },
    entry_points={"console_scripts": ["superglue-ros = superglue_ros.cli.main:main"]},
    zip_safe=False,
)
