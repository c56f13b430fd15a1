"""Spatial softmax: a feature map (B, C, H, W) -> expected keypoints (B, 2C).

Per channel: softmax over H*W of features / temperature, then the expected position on a
[-1, 1] grid. As in EVA's checkpoint, "x" runs over H and "y" over W (meshgrid indexing='ij'),
and the output is all x values then all y values.
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1))  # learnable, key `spatial_softmax.temperature`

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, c, h, w = features.shape
        heat = torch.softmax(features.reshape(b, c, h * w) / self.temperature, dim=-1).reshape(b, c, h, w)
        lin_h = torch.linspace(-1.0, 1.0, h, device=features.device, dtype=heat.dtype)
        lin_w = torch.linspace(-1.0, 1.0, w, device=features.device, dtype=heat.dtype)
        # Marginals make the expectation cheap: E[x] = sum_h p(h) * x_h.
        ex = (heat.sum(dim=3) * lin_h).sum(dim=2)
        ey = (heat.sum(dim=2) * lin_w).sum(dim=2)
        return torch.cat([ex, ey], dim=1)
