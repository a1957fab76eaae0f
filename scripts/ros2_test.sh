#!/usr/bin/env bash
# Run a command (default: the ROS2 tests) inside a private network namespace that holds only loopback, with
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a random ROS_DOMAIN_ID, so no DDS traffic can leave this machine.
#   bash scripts/ros2_test.sh                                   # pytest tests/test_ros2_safety.py tests/test_ros2_nodes.py
#   bash scripts/ros2_test.sh bash -c '.venv/bin/robot-rl-sim-driver --config configs/robot/sim.yaml & ...'
# The tests confine themselves the same way (tests/ros2_netns.py); this is for trying nodes by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then set -- .venv/bin/python -m pytest -q tests/test_ros2_safety.py tests/test_ros2_nodes.py; fi
if [ "$(id -u)" = 0 ]; then UNSHARE=(unshare -n); else UNSHARE=(unshare -rn); fi
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}"
unset ROS_LOCALHOST_ONLY ROS_STATIC_PEERS ROS_DISCOVERY_SERVER
exec "${UNSHARE[@]}" sh -c 'set -e; ip link set lo up; ip route add 224.0.0.0/4 dev lo
  n=$(ip -o link show | wc -l); [ "$n" = 1 ] || { echo "netns has $n interfaces, expected only lo" >&2; exit 97; }
  exec "$@"' sh "$@"
