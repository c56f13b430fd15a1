"""The AgileX Piper arm as the real backend (eva_ros/backends/piper.py) and the CAN emulator
(eva_core/sim/piper_emulator.py) both see it: the CAN protocol (`protocol`) and where each arm
sits in the action vector (`layout`). No MuJoCo, no python-can here."""
