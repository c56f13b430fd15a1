"""eva_ros: thin rclpy nodes, hardware backends and bringup for the EVA closed loop.

Algorithms live in `eva_core` (no ROS there); this package wires them to topics.
"""
