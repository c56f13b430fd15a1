"""Strict state-dict comparison shared by the checkpoint loaders (IDM, Wan transformer).

Each loader words its own error; this module only finds the differences and lists keys.
"""

from __future__ import annotations

from typing import Iterable, Mapping


def compare_state_dicts(expected: Mapping, given: Mapping) -> tuple[set, set, list[tuple[str, tuple, tuple]]]:
    """(keys missing from `given`, keys `given` has in excess, [(key, given shape, expected shape)])."""
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    shapes = [(k, tuple(given[k].shape), tuple(expected[k].shape))
              for k in sorted(set(given) & set(expected)) if tuple(given[k].shape) != tuple(expected[k].shape)]
    return missing, unexpected, shapes


def describe_keys(keys: Iterable[str], limit: int) -> str:
    """The first `limit` keys in sorted order, comma-separated, with a count of the rest."""
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def nonfinite_tensors(state: Mapping) -> list[str]:
    """The keys (sorted) of floating-point tensors holding NaN/inf: a checkpoint that trained into
    NaN, or a tampered one, would otherwise load and predict NaN (or garbage) at run time."""
    import torch

    return sorted(k for k, v in state.items()
                  if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()))
