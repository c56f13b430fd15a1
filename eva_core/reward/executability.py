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
embodiment YAML. The terms are one table, `TERMS` (computed, weighted and reported from it).
There is no default robot: pass `config=RewardConfig.from_embodiment(emb)` (or the
Embodiment itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields

import numpy as np
import torch

from eva_core.config import Section, param
from eva_core.embodiment import Embodiment

_ARRAYS = ("vel_max", "acc_max", "weights", "pos_lower", "pos_upper")


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly if needed
class RewardConfig(Section):
    """The embodiment's limits (arrays) and the reward's coefficients (defaults = EVA's released code)."""

    vel_max: np.ndarray = param(MISSING, "(D,) velocity limits", unit="1/s")
    acc_max: np.ndarray = param(MISSING, "(D,) acceleration limits", unit="1/s^2")
    weights: np.ndarray = param(MISSING, "(D,) raw weights; normalised by their mean inside the reward")
    pos_lower: np.ndarray = param(MISSING, "(D,) lower position limits (position-limit extension only)")
    pos_upper: np.ndarray = param(MISSING, "(D,) upper position limits (position-limit extension only)")
    jerk_coef: float = param(0.5, "c_j: weight of the jerk term", ge=0)
    acc_coef: float = param(0.25, "c_a: weight of the acceleration term", ge=0)
    vel_limit_coef: float = param(2.0, "c_v: weight of the velocity-limit term", ge=0)
    acc_limit_coef: float = param(1.0, "c_al: weight of the acceleration-limit term", ge=0)
    huber_acc_frac: float = param(0.5, "d_a = frac * a_max", gt=0)
    huber_jerk_frac: float = param(0.5, "d_j = frac * a_max / dt", gt=0)
    p0: float = param(2000.0, "P0 of R = scale (1 + P / P0)^-gamma", gt=0)
    gamma: float = param(0.5, "gamma of R = scale (1 + P / P0)^-gamma", gt=0)
    scale: float = param(10.0, "the score of a perfect sequence", gt=0)
    min_frames: int = param(4, "shorter sequences score 0 (jerk needs 4 frames)", ge=4)
    position_limit: bool = param(False, "the position-limit term (our extension; EVA's code has none)")
    # Scaled to EVA's P0 = 2000: one joint 0.1 rad past its limit for a whole clip -> P ~ 800,
    # score ~ 8.5; a brief 0.01 rad overshoot costs almost nothing.
    position_limit_coef: float = param(1.0e6, "c_p: weight of the position-limit term", ge=0)
    names: tuple[str, ...] = param((), "joint names (for reports)")

    def __post_init__(self):
        for k in _ARRAYS:   # lists -> float arrays; anything else fails the type check below
            try:
                object.__setattr__(self, k, np.asarray(getattr(self, k), dtype=np.float64))
            except (TypeError, ValueError):
                pass
        super().__post_init__()

    def validate(self) -> None:
        shapes = {k: np.shape(getattr(self, k)) for k in _ARRAYS}
        if len(set(shapes.values())) != 1 or len(shapes["vel_max"]) != 1:
            self.error("vel_max", f"limit arrays must be (D,) alike, got {shapes}")
        for k in _ARRAYS:
            if not np.all(np.isfinite(getattr(self, k))):
                self.error(k, "must be finite")
        for k in ("vel_max", "acc_max"):
            if not np.all(getattr(self, k) > 0):
                self.error(k, "must be > 0")
        if np.any(self.weights < 0) or not np.sum(self.weights) > 0:
            self.error("weights", "must be >= 0 and not all 0")

    @classmethod
    def from_embodiment(cls, emb: Embodiment, **overrides) -> "RewardConfig":
        """Limits and weights from the embodiment; coefficients from the defaults, the
        embodiment YAML's optional `embodiment.reward` mapping, then `overrides`."""
        if not isinstance(emb, Embodiment):
            raise TypeError(f"RewardConfig.from_embodiment needs an Embodiment, got {type(emb).__name__}")
        limits = dict(vel_max=np.array(emb.vel_max), acc_max=np.array(emb.acc_max),
                      weights=np.array(emb.reward_weights), pos_lower=np.array(emb.pos_lower),
                      pos_upper=np.array(emb.pos_upper), names=tuple(emb.joint_names))
        return cls.from_dict({**limits, **emb.reward, **overrides}, source=str(emb.config_file),
                             section="embodiment.reward")

    def with_overrides(self, **kw) -> "RewardConfig":
        """A copy with `kw` applied, checked like from_dict (unknown key: ConfigError with a hint)."""
        return type(self).from_dict({**{f.name: getattr(self, f.name) for f in fields(self)}, **kw},
                                    source=getattr(self, "_source", "") or "<dict>",
                                    section=getattr(self, "_section", ""))

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


@dataclass(frozen=True)
class _Kinematics:
    """What a term computes from: the actions a (B, T, D), their derivatives, the limits at dt."""

    cfg: RewardConfig
    a: torch.Tensor
    v: torch.Tensor
    acc: torch.Tensor
    jerk: torch.Tensor
    dt: float
    vmax: torch.Tensor
    amax: torch.Tensor
    w: torch.Tensor
    opts: dict

    def wmean(self, x: torch.Tensor) -> torch.Tensor:
        """Weighted mean over time and dims -> (B,)."""
        return (x * self.w).mean(dim=(1, 2))

    def tensor(self, values) -> torch.Tensor:
        return torch.as_tensor(values, **self.opts)


@dataclass(frozen=True)
class Term:
    """One penalty term: `components[name]` = weighted mean of `compute(k)`; P += cfg.<coef> * it."""

    name: str
    coef: str                                       # the RewardConfig field weighting it
    compute: Callable[[_Kinematics], torch.Tensor]  # (B, T', D) before the weighted mean
    enabled: Callable[[RewardConfig], bool] = lambda cfg: True


# The reward's terms, in summation order: adding a term is one entry here (+ its coefficient field).
TERMS: tuple[Term, ...] = (
    Term("jerk", "jerk_coef", lambda k: huber(k.jerk, k.cfg.huber_jerk_frac * k.amax / k.dt)),
    Term("acceleration", "acc_coef", lambda k: huber(k.acc, k.cfg.huber_acc_frac * k.amax)),
    Term("velocity_limit", "vel_limit_coef", lambda k: torch.relu(k.v.abs() - k.vmax) ** 2),
    Term("acceleration_limit", "acc_limit_coef", lambda k: torch.relu(k.acc.abs() - k.amax) ** 2),
    Term("position_limit", "position_limit_coef",
         lambda k: (torch.relu(k.a - k.tensor(k.cfg.pos_upper)) + torch.relu(k.tensor(k.cfg.pos_lower) - k.a)) ** 2,
         enabled=lambda cfg: cfg.position_limit),
)


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

    terms = [term for term in TERMS if term.enabled(cfg)]
    if t < cfg.min_frames:
        zeros = torch.zeros(b, **opts)
        res = RewardResult(score=zeros, penalty=torch.full((b,), float("inf"), **opts),
                           components={term.name: zeros.clone() for term in terms})
    else:
        v = torch.diff(a, dim=1) / dt
        acc = torch.diff(v, dim=1) / dt
        k = _Kinematics(cfg=cfg, a=a, v=v, acc=acc, jerk=torch.diff(acc, dim=1) / dt, dt=dt, vmax=vmax, amax=amax,
                        w=w, opts=opts)
        comps, penalty = {}, None
        for term in terms:   # summed in table order
            comps[term.name] = k.wmean(term.compute(k))
            part = getattr(cfg, term.coef) * comps[term.name]
            penalty = part if penalty is None else penalty + part
        finite = torch.isfinite(a).all(dim=(1, 2))
        penalty = torch.where(finite, penalty, torch.full_like(penalty, float("inf")))
        score = cfg.scale * (1.0 + penalty / cfg.p0) ** (-cfg.gamma)
        score = torch.where(finite, score, torch.zeros_like(score))
        res = RewardResult(score=score, penalty=penalty, components=comps)
    if single:
        res.score, res.penalty = res.score[0], res.penalty[0]
        res.components = {k: v[0] for k, v in res.components.items()}
    return res
