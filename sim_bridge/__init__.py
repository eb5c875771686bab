"""Simulators, VLN-CE episodes, metrics and evaluation (imports janus_core, never rclpy)."""
