"""EVA's executability reward: smooth, within-limits action sequences score close to 10.

For actions A (T, D) at dt = 1/fps (the reward of EVA's released code):
    v = dA/dt, a = dv/dt, j = da/dt                      (finite differences: T-1, T-2, T-3 rows)
    P = c_j * mean(huber(j, d_j) w) + c_a * mean(huber(a, d_a) w)
      + c_v * mean(relu(|v| - v_max)^2 w) + c_al * mean(relu(|a| - a_max)^2 w)
      [+ c_p * mean((relu(A - upper) + relu(lower - A))^2 w)]   <- our extension, off by default
    R = scale * (1 + P / P0)^(-gamma);  R = 0 if T < min_frames or A is not finite
with d_a = huber_acc_frac * a_max, d_j = huber_jerk_frac * a_max / dt and w the dimension weights
divided by their mean. Limits and weights come from the embodiment; the coefficients from
RewardConfig (defaults = EVA's released code), optionally overridden by a `reward:` section of the
embodiment YAML. There is no default robot: pass `config=RewardConfig.from_embodiment(emb)` (or the
Embodiment itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from eva_core.embodiment import Embodiment

_ARRAYS = ("vel_max", "acc_max", "weights", "pos_lower", "pos_upper")
_POSITIVE = ("p0", "gamma", "scale", "huber_acc_frac", "huber_jerk_frac")


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly if needed
class RewardConfig:
    vel_max: np.ndarray  # (D,) per second
    acc_max: np.ndarray  # (D,) per second^2
    weights: np.ndarray  # (D,) raw weights; normalised by their mean inside the reward
    pos_lower: np.ndarray  # (D,) used only by the position-limit extension
    pos_upper: np.ndarray
    jerk_coef: float = 0.5
    acc_coef: float = 0.25
    vel_limit_coef: float = 2.0
    acc_limit_coef: float = 1.0
    huber_acc_frac: float = 0.5  # d_a = frac * a_max
    huber_jerk_frac: float = 0.5  # d_j = frac * a_max / dt
    p0: float = 2000.0
    gamma: float = 0.5
    scale: float = 10.0
    min_frames: int = 4
    position_limit: bool = False  # our extension (EVA's code has no position term)
    # Scaled to EVA's P0 = 2000: one joint 0.1 rad past its limit for a whole clip -> P ~ 800,
    # score ~ 8.5; a brief 0.01 rad overshoot costs almost nothing.
    position_limit_coef: float = 1.0e6
    names: tuple = field(default=(), compare=False)

    def __post_init__(self):
        shapes = {k: np.shape(getattr(self, k)) for k in _ARRAYS}
        if len(set(shapes.values())) != 1 or len(shapes["vel_max"]) != 1:
            raise ValueError(f"RewardConfig: limit arrays must be (D,) alike, got {shapes}")
        for k in _ARRAYS:
            if not np.all(np.isfinite(getattr(self, k))):
                raise ValueError(f"RewardConfig: {k}: must be finite")
        if not (np.all(np.asarray(self.vel_max) > 0) and np.all(np.asarray(self.acc_max) > 0)):
            raise ValueError("RewardConfig: vel_max and acc_max must be > 0")
        if np.any(np.asarray(self.weights) < 0) or not np.sum(self.weights) > 0:
            raise ValueError("RewardConfig: weights must be >= 0 and not all 0")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _ARRAYS or f.name == "names":
                continue
            if f.type in ("bool",):
                if not isinstance(v, bool):
                    raise ValueError(f"RewardConfig: {f.name}: needs true/false, got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"RewardConfig: {f.name}: needs a finite number, got {v!r}")
            elif v < 0 or (f.name in _POSITIVE and v == 0):
                raise ValueError(f"RewardConfig: {f.name}: must be {'> 0' if f.name in _POSITIVE else '>= 0'}, got {v}")
        if self.min_frames < 4:
            raise ValueError(f"RewardConfig: min_frames: must be >= 4 (jerk needs 4 frames), got {self.min_frames}")

    @classmethod
    def from_embodiment(cls, emb: Embodiment, **overrides) -> "RewardConfig":
        """Limits and weights from the embodiment; coefficients from the dataclass defaults, the
        embodiment YAML's optional `embodiment.reward` mapping, then `overrides`."""
        if not isinstance(emb, Embodiment):
            raise TypeError(f"RewardConfig.from_embodiment needs an Embodiment, got {type(emb).__name__}")
        cfg = cls(vel_max=np.array(emb.vel_max), acc_max=np.array(emb.acc_max),
                  weights=np.array(emb.reward_weights), pos_lower=np.array(emb.pos_lower),
                  pos_upper=np.array(emb.pos_upper), names=tuple(emb.joint_names))
        try:
            return cfg.with_overrides(**{**emb.reward, **overrides})
        except ValueError as e:
            raise ValueError(f"{emb.config_file}: embodiment.reward: {e}") from None

    def with_overrides(self, **kw) -> "RewardConfig":
        known = {f.name for f in fields(self)}
        bad = sorted(set(kw) - known)
        if bad:
            raise ValueError(f"RewardConfig: unknown keys {bad}")
        kw = {k: (np.asarray(v, dtype=np.float64) if k in _ARRAYS else v) for k, v in kw.items()}
        return replace(self, **kw)

    @property
    def dof(self) -> int:
        return int(np.asarray(self.vel_max).shape[0])


@dataclass
class RewardResult:
    score: torch.Tensor  # () or (B,) in [0, scale]
    penalty: torch.Tensor  # () or (B,) P (inf where the score is forced to 0)
    components: dict  # name -> () or (B,) tensor: the raw means before the coefficients
    actions: torch.Tensor | None = None  # set by video_reward

    def as_dict(self) -> dict:
        """Plain floats (single sample) or lists (batch), for logs and JSON."""
        conv = lambda t: t.tolist()  # noqa: E731
        return {"score": conv(self.score), "penalty": conv(self.penalty),
                **{k: conv(v) for k, v in self.components.items()}}


def huber(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """0.5 x^2 if |x| <= delta else delta (|x| - 0.5 delta), elementwise (delta broadcasts)."""
    ax = x.abs()
    return torch.where(ax <= delta, 0.5 * x * x, delta * (ax - 0.5 * delta))


def executability_reward(actions, fps: float = 16.0, *, config: RewardConfig | Embodiment) -> RewardResult:
    """Score (T, D) or (B, T, D) action sequences; see the module docstring for the formula.

    `config`: the RewardConfig, or an Embodiment (its limits with the default coefficients).
    """
    cfg = RewardConfig.from_embodiment(config) if isinstance(config, Embodiment) else config
    if not isinstance(cfg, RewardConfig):
        raise TypeError(f"executability_reward: config must be a RewardConfig or an Embodiment, got {type(config).__name__}")
    a = torch.as_tensor(actions)
    if not a.is_floating_point():
        a = a.double()
    elif a.dtype in (torch.float16, torch.bfloat16):
        a = a.float()
    single = a.dim() == 2
    if single:
        a = a.unsqueeze(0)
    if a.dim() != 3 or a.shape[-1] != cfg.dof:
        raise ValueError(f"actions must be (T, {cfg.dof}) or (B, T, {cfg.dof}), got {tuple(a.shape)}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    b, t, _ = a.shape
    opts = dict(dtype=a.dtype, device=a.device)
    vmax, amax = torch.as_tensor(cfg.vel_max, **opts), torch.as_tensor(cfg.acc_max, **opts)
    w = torch.as_tensor(cfg.weights, **opts)
    w = w / w.mean()
    dt = 1.0 / float(fps)

    names = ["jerk", "acceleration", "velocity_limit", "acceleration_limit"] + (["position_limit"] if cfg.position_limit else [])
    if t < cfg.min_frames:
        zeros = torch.zeros(b, **opts)
        res = RewardResult(score=zeros, penalty=torch.full((b,), float("inf"), **opts),
                           components={n: zeros.clone() for n in names})
    else:
        v = torch.diff(a, dim=1) / dt
        acc = torch.diff(v, dim=1) / dt
        jerk = torch.diff(acc, dim=1) / dt
        wmean = lambda x: (x * w).mean(dim=(1, 2))  # noqa: E731 - mean over time and dims
        comps = {
            "jerk": wmean(huber(jerk, cfg.huber_jerk_frac * amax / dt)),
            "acceleration": wmean(huber(acc, cfg.huber_acc_frac * amax)),
            "velocity_limit": wmean(torch.relu(v.abs() - vmax) ** 2),
            "acceleration_limit": wmean(torch.relu(acc.abs() - amax) ** 2),
        }
        penalty = (cfg.jerk_coef * comps["jerk"] + cfg.acc_coef * comps["acceleration"]
                   + cfg.vel_limit_coef * comps["velocity_limit"] + cfg.acc_limit_coef * comps["acceleration_limit"])
        if cfg.position_limit:
            lo, hi = torch.as_tensor(cfg.pos_lower, **opts), torch.as_tensor(cfg.pos_upper, **opts)
            comps["position_limit"] = wmean((torch.relu(a - hi) + torch.relu(lo - a)) ** 2)
            penalty = penalty + cfg.position_limit_coef * comps["position_limit"]
        finite = torch.isfinite(a).all(dim=(1, 2))
        penalty = torch.where(finite, penalty, torch.full_like(penalty, float("inf")))
        score = cfg.scale * (1.0 + penalty / cfg.p0) ** (-cfg.gamma)
        score = torch.where(finite, score, torch.zeros_like(score))
        res = RewardResult(score=score, penalty=penalty, components=comps)
    if single:
        res.score, res.penalty = res.score[0], res.penalty[0]
        res.components = {k: v[0] for k, v in res.components.items()}
    return res
