"""Plot the 14 decoded action curves (like EVA's idm_plots): one panel per dimension."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eva_core.atomic_io import atomic_path  # noqa: E402


def plot_action_curves(actions, path=None, fps: float = 16.0, names=None, reference=None,
                       lower=None, upper=None, title: str | None = None):
    """actions (T, D); optional `reference` (T, D) drawn dashed (e.g. ground truth) and position
    limits `lower`/`upper` (D,) drawn as grey lines. Left arm in the left column, right arm in the
    right one. Saves atomically to `path` if given; returns the Figure."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"actions must be (T, D), got shape {a.shape}")
    t_len, d = a.shape
    names = list(names) if names is not None else [f"dim {i}" for i in range(d)]
    rows = (d + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(10, 1.6 * rows), sharex=True, squeeze=False)
    t = np.arange(t_len) / fps
    for i in range(d):
        ax = axes[i % rows, i // rows]
        ax.plot(t, a[:, i], lw=1.2, label="decoded")
        if reference is not None:
            ax.plot(t, np.asarray(reference)[:, i], "--", lw=1.0, label="reference")
        for lim in (lower, upper):
            if lim is not None and np.isfinite(lim[i]):
                ax.axhline(float(lim[i]), color="0.6", lw=0.8)
        ax.set_ylabel(names[i], fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("time [s]", fontsize=8)
    for j in range(d, rows * 2):
        axes[j % rows, j // rows].axis("off")
    if reference is not None:
        axes[0, 0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip(".") or "png")
    return fig
