"""ROS 2 side of janus_vln_ros: the navigator and sim_bridge nodes, conversions, CLI."""
