"""A light decoder: Wan latents -> frames, trained to reproduce the Wan VAE decoder (TAEHV's approach).

    dec = LightDecoder(LightDecoderConfig())
    video = dec.decode(latents)   # (B, 16, Tl, h, w) normalised latents -> (B, 3, 4(Tl-1)+1, 8h, 8w) in [-1, 1]

The input and output match `encoders.vae_decode`: the latents are the world model's normalised ones
(`latents_mean`/`latents_std` applied), and the video is float32 in [-1, 1]. Each latent frame is
decoded by a 2D conv net. At latent resolution, a causal memory block mixes each frame with the one
before it, and a temporal "grow" turns each latent frame into `temporal_stride` frames. The first
`temporal_stride - 1` frames are dropped, as Wan's causal VAE makes one frame from the first latent.

Checkpoint: a directory with `config.json` ({"format", "version", "config"}) and `model.safetensors`.
Loading is strict: a bad JSON, an unknown config key, or a missing, unexpected or mis-shaped
weight raises `LightDecoderCheckpointError` naming the file. There is no pickle.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from eva_core.atomic_io import atomic_path, write_json
from eva_core.state_dict import compare_state_dicts, describe_keys, nonfinite_tensors

FORMAT = "eva_ros.light_decoder"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class LightDecoderCheckpointError(ValueError):
    """A light-decoder checkpoint that cannot be read or does not match its config; names the file."""


@dataclass
class LightDecoderConfig:
    latent_channels: int = 16  # Wan VAE z_dim
    # widths: the first at latent resolution, then one per x2 spatial upsampling (4 widths: stride 8)
    channels: list[int] = field(default_factory=lambda: [64, 32, 16, 16])
    temporal_stride: int = 4  # Wan VAE: 4(Tl-1)+1 frames from Tl latent frames

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def validate(self) -> None:
        if not isinstance(self.channels, list):
            raise ValueError(f"light decoder: channels must be a list of widths, got {self.channels!r}")
        ints = [self.latent_channels, self.temporal_stride, *self.channels]
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in ints):
            raise ValueError(f"light decoder: latent_channels, temporal_stride and channels must be positive "
                             f"integers, got {self.latent_channels!r}, {self.temporal_stride!r}, {self.channels!r}")
        if not self.channels:
            raise ValueError("light decoder: channels must list at least one width")

    def to_dict(self) -> dict:
        return {"latent_channels": self.latent_channels, "channels": list(self.channels),
                "temporal_stride": self.temporal_stride}

    @classmethod
    def from_dict(cls, data: dict, source: str = "light decoder config") -> "LightDecoderConfig":
        if not isinstance(data, dict):
            raise LightDecoderCheckpointError(f"{source}: config: expected a mapping, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                near = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise LightDecoderCheckpointError(f"{source}: config: {key}: unknown key{hint}")
        kw = dict(data)
        if isinstance(kw.get("channels"), tuple):
            kw["channels"] = list(kw["channels"])
        cfg = cls(**kw)
        try:
            cfg.validate()
        except ValueError as e:
            raise LightDecoderCheckpointError(f"{source}: config: {e}") from None
        return cfg


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(c, c), _conv(c, c)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


class MemBlock(nn.Module):
    """Residual block that sees the previous frame too (causal in time): x (B, T, C, h, w)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(2 * c, c), _conv(c, c)

    def forward(self, x):
        b, t, c, h, w = x.shape
        past = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        y = self.conv1(torch.cat([x, past], dim=2).reshape(b * t, 2 * c, h, w))
        y = self.conv2(F.relu(y)).reshape(b, t, c, h, w)
        return x + y


class LightDecoder(nn.Module):
    def __init__(self, config: LightDecoderConfig | None = None):
        super().__init__()
        cfg = config or LightDecoderConfig()
        cfg.validate()
        self.config = cfg
        c0 = cfg.channels[0]
        self.stem = _conv(cfg.latent_channels, c0)
        self.mem = MemBlock(c0)
        self.grow = nn.Conv2d(c0, c0 * cfg.temporal_stride, 1)  # each latent frame -> temporal_stride frames
        self.ups = nn.ModuleList(
            nn.ModuleDict({"conv": _conv(cin, cout), "res": ResBlock(cout)})
            for cin, cout in zip(cfg.channels[:-1], cfg.channels[1:]))
        self.head = _conv(cfg.channels[-1], 3)

    def num_frames(self, latent_frames: int) -> int:
        return self.config.temporal_stride * (latent_frames - 1) + 1

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, Tl, h, w) normalised latents -> (B, 3, T, H, W), unclamped (the training output)."""
        if latents.ndim != 5 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(f"light decoder: expected latents (B, {self.config.latent_channels}, Tl, h, w), "
                             f"got {tuple(latents.shape)}")
        b, c, tl, h, w = latents.shape
        s = self.config.temporal_stride
        x = latents.to(self.stem.weight.dtype).permute(0, 2, 1, 3, 4).reshape(b * tl, c, h, w)
        x = F.relu(self.stem(x))
        x = self.mem(x.reshape(b, tl, -1, h, w))
        c0 = x.shape[2]
        x = self.grow(F.relu(x).reshape(b * tl, c0, h, w)).reshape(b, tl * s, c0, h, w)
        t = self.num_frames(tl)
        x = x[:, s - 1:].reshape(b * t, c0, h, w)  # drop the first s-1: one frame from the first latent
        for up in self.ups:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = up["res"](F.relu(up["conv"](x)))
        x = self.head(F.relu(x))
        return x.reshape(b, t, 3, *x.shape[-2:]).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """As `encoders.vae_decode`: normalised latents -> video (B, 3, T, H, W) float32 in [-1, 1]."""
        p = next(self.parameters())
        return self(latents.to(device=p.device)).float().clamp(-1, 1)


# ---- checkpoint --------------------------------------------------------------------------------------
def save_light_decoder(model: LightDecoder, path: str | os.PathLike) -> Path:
    """Write `path/config.json` and `path/model.safetensors` (each atomically)."""
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_json(out / CONFIG_FILE, {"format": FORMAT, "version": VERSION, "config": model.config.to_dict()})
    return out


def load_light_decoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> LightDecoder:
    """Strict load of a directory written by `save_light_decoder`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path)
    cfg_file, weights = root / CONFIG_FILE, root / WEIGHTS_FILE
    for f in (cfg_file, weights):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing (a light-decoder checkpoint holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LightDecoderCheckpointError(f"{cfg_file}: not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise LightDecoderCheckpointError(f"{cfg_file}: format is {got!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise LightDecoderCheckpointError(f"{cfg_file}: version {meta.get('version')!r}, this code reads {VERSION}")
    extra = sorted(set(meta) - {"format", "version", "config"})
    if extra:
        raise LightDecoderCheckpointError(f"{cfg_file}: unknown top-level key(s) {extra}")
    model = LightDecoder(LightDecoderConfig.from_dict(meta.get("config", {}), str(cfg_file)))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise LightDecoderCheckpointError(f"{weights}: not a readable safetensors file: {e}") from None
    missing, unexpected, shapes = compare_state_dicts(model.state_dict(), state)
    parts = []
    if missing:
        parts.append(f"missing {describe_keys(missing, 8)}")
    if unexpected:
        parts.append(f"unexpected {describe_keys(unexpected, 8)}")
    if shapes:
        parts.append("shape mismatch " + "; ".join(f"{k}: file {g} vs model {w}" for k, g, w in shapes[:5]))
    if parts:
        raise LightDecoderCheckpointError(f"{weights}: does not match the config in {cfg_file.name}: "
                                          + "; ".join(parts))
    bad = nonfinite_tensors(state)
    if bad:
        more = f" (and {len(bad) - 1} more: {describe_keys(bad[1:], 5)})" if len(bad) > 1 else ""
        raise LightDecoderCheckpointError(f"{weights}: tensor {bad[0]!r} holds NaN/inf{more}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def vae_geometry(vae) -> tuple[int, int, int]:
    """(latent channels, spatial stride, temporal stride) of a diffusers AutoencoderKLWan: one x2
    spatial down-sampling per `temperal_downsample` stage, x2 in time where it is True."""
    c = vae.config
    return int(c.z_dim), 2 ** len(c.temperal_downsample), 2 ** sum(bool(t) for t in c.temperal_downsample)


def load_for_vae(path: str | os.PathLike, vae, device: str | torch.device = "cpu") -> LightDecoder:
    """`load_light_decoder`, refused (naming its config.json) unless it decodes what `vae` decodes:
    the same latent channels and spatial/temporal strides."""
    model = load_light_decoder(path, device)
    cfg = model.config
    mine = (cfg.latent_channels, cfg.spatial_stride, cfg.temporal_stride)
    theirs = vae_geometry(vae)
    if mine != theirs:
        raise LightDecoderCheckpointError(
            f"{Path(path) / CONFIG_FILE}: this light decoder reads {mine[0]}-channel latents at strides "
            f"x{mine[1]} (space) x{mine[2]} (time), the world model's VAE makes {theirs[0]}-channel latents at "
            f"x{theirs[1]} x{theirs[2]}: it was trained for another VAE")
    return model
