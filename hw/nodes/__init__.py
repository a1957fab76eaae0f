"""ROS2 nodes, each with a console-script ``main(argv)``: :mod:`.sim_driver`, :mod:`.safety_supervisor`,
:mod:`.teleop`. Parameters are ROS2 parameters with descriptors and ranges; ``--config configs/robot/<name>.yaml``
loads the node's section of a robot config."""
