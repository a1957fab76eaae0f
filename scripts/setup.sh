#!/usr/bin/env bash
# Set up robot_rl in ./.venv on a fresh Linux machine: system libraries for headless rendering, then the package
# with the tested pins from constraints.txt. Usage: bash scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "robot_rl needs Python >= 3.10 (found $("$PY" --version))" >&2; exit 1; }

# Headless MuJoCo rendering (camera observations, videos) uses EGL through Mesa.
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' || ! ldconfig -p 2>/dev/null | grep -q 'libOpenGL.so.0\|libGL.so.1'; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing EGL/Mesa for headless rendering (apt-get)..."
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libegl1 libgl1 libopengl0 libegl-mesa0 libgl1-mesa-dri >/dev/null
fi

extras=""
if [ "${1:-}" = "--dev" ]; then
  extras="[dev,ros2]"  # the ROS2 tests run real rclpy nodes inside a loopback-only network namespace (needs ip)
  if ! command -v ip >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq iproute2 >/dev/null
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import robot_rl, sim, torch, mujoco; print(f'robot_rl ready: torch {torch.__version__}, mujoco {mujoco.__version__}')"
