"""Count what the transformer actually evaluates, with a forward pre-hook (not from the config).

`calls` counts one per batch row of each forward: a sample's guidance branch at one step, so EVA's
sampler costs steps x branches whether the branches run batched in one forward or one by one
(`forwards` counts the module calls). A cache that skips blocks inside a call still counts the call.
"""

from __future__ import annotations

import torch


class CallCounter:
    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.forwards = 0
        self._handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)
        self.forwards += 1
        self.calls += int(x.shape[0]) if torch.is_tensor(x) and x.ndim > 0 else 1

    def reset(self) -> None:
        self.calls = self.forwards = 0

    def remove(self) -> None:
        self._handle.remove()
