"""ROS 2 nodes: thin wiring of topics into the ROS-free core (controller, trainer)."""
