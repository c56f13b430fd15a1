"""A world model in a child process: its own interpreter and GIL, so the Python work of the
model (the diffusers modules between torch ops) and the executor threads of the process that
asks for chunks (callbacks, a 200 Hz control thread) never wait for each other.

    wm = ModelProcess(world_model_cfg.to_dict(), "cobot_magic", torch_threads=1)
    frames = wm.generate(image, "pick up the block", history=None, seed=0)   # blocks; GIL released
    wm.last_timing   # the child's last_timing, plus "wait": the call's wall time in the child
                     # minus its thread's CPU time (waiting for a core)
    wm.close()

The child is started with `spawn` (no fork of a process that runs DDS threads) and builds the
model with eva_core.world_model.build.build_world_model. Requests and frames travel pickled over
a pipe: cheap for the toy model's frames (9 x 48 x 64 x 3 bytes); EVA's 49 x 480 x 640 x 3
chunks (45 MB) would want shared memory instead. A child that dies fails the next call with a
RuntimeError; the planner reports it as a planning error.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

from eva_core.pipe_server import serve_requests

START_TIMEOUT = 600.0   # s: imports and the model build of a big checkpoint


def _serve(conn, cfg: dict, embodiment: str, torch_threads: int) -> None:
    """The child: build the model, then answer generate requests until None or a closed pipe."""
    try:
        import torch

        from eva_core.embodiment import load_embodiment
        from eva_core.world_model.build import build_world_model

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        wm = build_world_model(cfg, load_embodiment(embodiment))
        conn.send(("ready", {k: getattr(wm, k) for k in ("fps", "num_frames", "height", "width")}))
    except BaseException as exc:  # noqa: BLE001 - tell the parent why, then end
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return

    def generate(request):
        image, instruction, kwargs = request
        t0, cpu = time.perf_counter(), time.thread_time()
        frames = wm.generate(image, instruction, **kwargs)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu
        timing = {**getattr(wm, "last_timing", {}), "wait": max(0.0, wall - cpu)}
        return frames, timing, getattr(wm, "last_info", {})

    serve_requests(conn, generate)


class ModelProcess:
    """A VideoModel (generate, fps, num_frames, height, width, last_timing) served by a child
    process. One caller at a time (a lock serialises calls)."""

    def __init__(self, cfg: dict, embodiment: str, torch_threads: int = 1, start_timeout: float = START_TIMEOUT):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, dict(cfg), str(embodiment), int(torch_threads)),
                                 name="eva-world-model", daemon=True)
        self._proc.start()
        child.close()
        self._lock = threading.Lock()
        self.last_timing: dict = {}
        self.last_info: dict = {}
        kind, value = self._receive(start_timeout, "starting")
        if kind != "ready":
            self.close()
            raise RuntimeError(f"world-model process: {value}")
        self.fps, self.num_frames = value["fps"], value["num_frames"]
        self.height, self.width = value["height"], value["width"]

    def _receive(self, timeout: float | None, what: str):
        if not self._conn.poll(timeout):
            raise RuntimeError(f"world-model process: no answer in {timeout:.0f} s while {what}")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"world-model process died while {what} (exit {self._proc.exitcode})") from None

    def generate(self, image, instruction: str, history=None, seed=None, **kwargs):
        with self._lock:
            if not self._proc.is_alive():
                raise RuntimeError(f"world-model process is not running (exit {self._proc.exitcode})")
            try:
                self._conn.send((image, instruction, {"history": history, "seed": seed, **kwargs}))
            except (BrokenPipeError, OSError) as exc:
                raise RuntimeError(f"world-model process: {exc}") from None
            kind, value = self._receive(None, "generating")
        if kind != "ok":
            raise RuntimeError(f"world-model process: {value}")
        frames, self.last_timing, self.last_info = value
        return frames

    def close(self, timeout: float = 10.0) -> None:
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)
        self._conn.close()
