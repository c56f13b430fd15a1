"""eva-demo: the toy EVA closed loop in the physics twin (`make demo`).

cli (the command line, the untrained plumbing demo), evaluation (the trained demo: episodes
scored into report.json), runs (one bringup per demo or episode, through the graph harness
eva_ros.testing), recorder (the rollout video and plots).
"""


def main(argv=None) -> int:
    from eva_ros.demo.cli import main as _main

    return _main(argv)
