#!/usr/bin/env bash
# Run the ROS2 tests N times in a row (default 20) while another process keeps one core busy, as on a robot computer
# that also trains; stops at the first failure. Each run must also leave no Fast DDS shared memory behind.
# Usage: bash scripts/ros2_soak.sh [N] [pytest args...]   (e.g. bash scripts/ros2_soak.sh 20 -k lockstep)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
shift || true
py=.venv/bin/python
"$py" -c 'while True: pass' &
hog=$!
trap 'kill $hog 2>/dev/null || true' EXIT
shm() { ls /dev/shm 2>/dev/null | grep -c -E '^(sem\.)?fast(rtps|_datasharing)_' || true; }
before=$(shm)
start=$(date +%s)
for i in $(seq 1 "$n"); do
  t0=$(date +%s)
  if ! "$py" -m pytest -q -p no:cacheprovider tests/test_ros2_*.py "$@" > /tmp/ros2_soak_run.log 2>&1; then
    tail -60 /tmp/ros2_soak_run.log
    echo "ros2 soak: run $i of $n FAILED (log above; full log /tmp/ros2_soak_run.log)"
    exit 1
  fi
  left=$(( $(shm) - before ))
  echo "ros2 soak: run $i/$n passed in $(( $(date +%s) - t0 )) s ($(tail -1 /tmp/ros2_soak_run.log)); DDS shm files left: $left"
  if [ "$left" -gt 0 ]; then echo "ros2 soak: run $i left shared memory behind"; exit 1; fi
done
echo "ros2 soak: $n of $n runs passed in $(( $(date +%s) - start )) s with one core kept busy"
