"""Pick MuJoCo's OpenGL backend before `mujoco` is first imported (it reads MUJOCO_GL then).

`MUJOCO_GL` set: left as is. Else, without a display (no DISPLAY / WAYLAND_DISPLAY, a plain SSH
shell or a container): EGL when libEGL is found, then OSMesa; neither: one line saying what to
install or set. With a display MuJoCo's default (GLFW) stays. Standard library only.
"""

from __future__ import annotations

import ctypes.util
import os

HINT = ("no display and neither libEGL nor libOSMesa found: install libegl1 (GPU or Mesa) or "
        "libosmesa6, or set MUJOCO_GL=egl|osmesa|glfw")


def select_gl_backend(environ=os.environ, find_library=ctypes.util.find_library) -> str:
    """The backend in use after the choice ("" for MuJoCo's default); sets MUJOCO_GL (and
    PYOPENGL_PLATFORM to match) in `environ`. RuntimeError(HINT) when nothing can render."""
    if environ.get("MUJOCO_GL"):
        return environ["MUJOCO_GL"]
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return ""
    for backend, lib in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if find_library(lib):
            environ["MUJOCO_GL"] = backend
            environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    raise RuntimeError(HINT)
