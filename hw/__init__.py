"""ROS2 side of robot_rl: the sim-as-robot driver, the safety supervisor, teleop, and the env client.

* :mod:`hw.safety` / :mod:`hw.timesync`: pure Python (no ROS): limits, watchdog, validation, stamp alignment.
* :mod:`hw.ros_env`: ``RosRobotEnv``, registered as ``hw.ros_env:robot_rl/Ros2Robot-v0`` for task configs.
* :mod:`hw.nodes`: console-script nodes ``robot-rl-sim-driver``, ``robot-rl-safety``, ``robot-rl-estop``,
  ``robot-rl-teleop``, ``robot-rl-actor`` and ``robot-rl-learner``.

Everything that imports rclpy needs the ``ros2`` extra (``pip install 'robot-rl[ros2]'``); importing ``hw``
itself does not.
"""
