"""Graph processes: a console script in its own process group (so exactly it is stopped)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from eva_ros.testing.env import BIN


class Child:
    """`argv` in its own process group, stdout+stderr to the file `log`; stopped with SIGINT."""

    def __init__(self, argv: list[str], log: Path, env: dict):
        self.log = log
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen([str(a) for a in argv], env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL: the process dies without any cleanup (a crashed node)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT, then SIGKILL after `timeout` s; the exit status."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
            if self.wait(timeout) is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._fh.close()
        return self.proc.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class NodeProcess(Child):
    """One console-script node (`eva-camera-node`, ...) on a params file; log in log_dir/<name>.log."""

    def __init__(self, script: str, params: Path, env: dict, log_dir: Path, name: str | None = None,
                 extra_args: tuple = ()):
        self.name = name or script
        super().__init__([BIN / script, "--ros-args", "--params-file", params, *extra_args],
                         log_dir / f"{self.name}.log", env)
