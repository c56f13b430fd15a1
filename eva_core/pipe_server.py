"""The request loop of a worker child process (the world-model process, the twin's render process)."""

from __future__ import annotations


def serve_requests(conn, handle) -> None:
    """Answer each request on `conn` with ("ok", handle(request)), or ("error", one line) when
    handle raises; return on None or when the parent's end of the pipe closes."""
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        try:
            reply = ("ok", handle(request))
        except Exception as exc:  # noqa: BLE001 - the parent raises it
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)
