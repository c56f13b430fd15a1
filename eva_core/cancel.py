"""Stop a node's torch work between two of its steps when the node shuts down.

A long computation (the world model's denoising steps, the IDM's batches, the VAE decode) is a
sequence of torch module calls. Work runs inside `TorchWork.running()`; `cancel()` makes the next
module call in a thread doing such work raise `Cancelled`, so it ends between two steps and its
thread joins within launch's SIGINT grace period (5 s) instead of finishing a whole chunk. The
module hook is only installed by `cancel()` and removed when the last block has stopped:
nothing costs anything while the node runs.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager


class Cancelled(RuntimeError):
    """The work was stopped between two steps: its node is shutting down."""


class TorchWork:
    """The threads running cancellable torch work, and the switch that stops them."""

    def __init__(self, what: str = "work"):
        self.what = what
        self.cancelled = threading.Event()
        self._threads: set[int] = set()
        self._lock = threading.Lock()
        self._hook = None

    @contextmanager
    def running(self):
        """Run the block as cancellable work (Cancelled at once if already cancelled)."""
        ident = threading.get_ident()
        with self._lock:
            if self.cancelled.is_set():
                raise Cancelled(f"{self.what}: cancelled (shutting down)")
            self._threads.add(ident)
        try:
            yield
        finally:
            with self._lock:
                self._threads.discard(ident)
                if self._hook is not None and not self._threads:   # the last one stopped: unhook
                    self._hook.remove()
                    self._hook = None

    def cancel(self) -> None:
        """Stop every running block at its next torch module call, and refuse new ones."""
        import torch

        with self._lock:
            self.cancelled.set()
            if self._hook is None and self._threads:
                self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._check)

    def _check(self, module, args) -> None:
        if threading.get_ident() in self._threads:
            raise Cancelled(f"{self.what}: cancelled between steps (shutting down)")
