"""Render the twin's cameras in a child process.

A MuJoCo render holds the calling process's GIL for its whole length (13-16 ms for a 48x64
frame through EGL on a CPU host), so a sim camera in the robot process delays the 200 Hz control
thread by up to three ticks every frame. `RenderProcess` keeps a copy of the compiled model in a
child process and renders there: this process only sends the state (qpos and the fixed bodies'
poses, which tasks may move) and receives the image.

The child ignores SIGINT (its parent stops it) and exits when the pipe closes, so it never
outlives a parent that was killed or left through os._exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from multiprocessing import Pipe
from multiprocessing.connection import Connection

import numpy as np

from eva_core.pipe_server import serve_requests

READY_TIMEOUT = 60.0   # s for the child to import mujoco and load the model
RENDER_TIMEOUT = 10.0  # s for one frame


class RenderProcessError(RuntimeError):
    pass


def _serve(model_path: str, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from eva_core.sim.gl import select_gl_backend

        select_gl_backend()
        import mujoco

        model = mujoco.MjModel.from_binary_path(model_path)
        data = mujoco.MjData(model)
        renderers: dict = {}
        conn.send(("ready", None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return

    def render(request):
        camera, height, width, qpos, body_pos, body_quat = request
        r = renderers.get((height, width))
        if r is None:
            r = renderers[(height, width)] = mujoco.Renderer(model, height, width)
        model.body_pos[:] = body_pos
        model.body_quat[:] = body_quat
        data.qpos[:] = qpos
        mujoco.mj_kinematics(model, data)
        mujoco.mj_camlight(model, data)   # camera poses follow the links
        r.update_scene(data, camera=camera)
        return r.render().copy()

    serve_requests(conn, render)
    for r in renderers.values():
        r.close()


class RenderProcess:
    """Renders `model` (an MjModel; its current state is copied) in a child process."""

    def __init__(self, model):
        import mujoco

        fd, path = tempfile.mkstemp(prefix="eva_twin_", suffix=".mjb")
        os.close(fd)
        mujoco.mj_saveModel(model, path)
        # a fresh interpreter (no copied locks, threads or GL state; nothing of this __main__)
        self._conn, child = Pipe()
        self._proc = subprocess.Popen([sys.executable, "-m", __name__, str(child.fileno()), path],
                                      pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        try:
            kind, value = self._reply(READY_TIMEOUT, "start")
        except RenderProcessError:
            self.close()
            raise
        finally:
            os.unlink(path)   # the child has loaded it (or never will)
        if kind != "ready":
            self.close()
            raise RenderProcessError(f"twin render process: {value}")

    def _reply(self, timeout: float, what: str):
        try:
            if not self._conn.poll(timeout):
                raise RenderProcessError(f"twin render process: no reply to {what} in {timeout:g} s")
            return self._conn.recv()
        except (EOFError, OSError):
            raise RenderProcessError(f"twin render process exited (rc {self._exit_code()}) during {what}") from None

    def render(self, camera: str, height: int, width: int, qpos: np.ndarray, body_pos: np.ndarray,
               body_quat: np.ndarray) -> np.ndarray:
        try:
            self._conn.send((camera, int(height), int(width), qpos, body_pos, body_quat))
        except (BrokenPipeError, OSError):
            raise RenderProcessError(f"twin render process exited (rc {self._exit_code()})") from None
        kind, value = self._reply(RENDER_TIMEOUT, f"a {height}x{width} frame of {camera!r}")
        if kind != "ok":
            raise RenderProcessError(f"twin render process: {value}")
        return value

    def _exit_code(self):
        try:
            return self._proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return None

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self, timeout: float = 2.0) -> None:
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout)
        self._conn.close()


if __name__ == "__main__":   # the child: render_process FD MODEL.mjb
    _serve(sys.argv[2], Connection(int(sys.argv[1])))
