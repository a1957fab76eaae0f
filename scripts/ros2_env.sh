# Source this before starting robot_rl's ROS2 nodes by hand: DDS discovery stays on this machine and in a private
# domain, so the sim robot never talks to (or hears from) other ROS2 machines on the network.
#   source scripts/ros2_env.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}
echo "ROS2: discovery on localhost, domain ${ROS_DOMAIN_ID}"
