"""The inverse dynamics model: frames [t-1, t, t+1] -> the action at t (config.action_dim; 14 for EVA).

    early fusion (EVA): frames stacked on channels -> backbone -> SpatialSoftmax -> MLP head
    late fusion:        each frame -> backbone -> SpatialSoftmax; k keypoint sets concatenated -> MLP
    predict(): action = out * action_std + action_mean

Normalisation stats are non-persistent buffers, so `state_dict()` of variant "resnet_plus" has
exactly the keys of EVA's `IDM_singleview.pt` (backbone.*, spatial_softmax.temperature,
mlp_head.0/1/4/6.*); checkpoint code stores the stats next to the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from eva_core.idm.config import PRECISIONS, IDMConfig
from eva_core.idm.spatial_softmax import SpatialSoftmax
from eva_core.images import normalize_imagenet


def _resnet_backbone(cfg: IDMConfig) -> tuple[nn.Module, int]:
    """A torchvision ResNet (no download) whose conv1 takes 3*k channels; fc kept for key parity."""
    if cfg.variant == "resnet_plus":
        net, feat = torchvision.models.resnet50(weights=None), 2048
    else:
        net, feat = torchvision.models.resnet18(weights=None), 512
    if cfg.backbone_weights:
        _load_backbone_weights(net, cfg.backbone_weights)
    if cfg.fusion == "late":  # one frame in: the RGB conv1 as it is
        return net, feat
    old = net.conv1
    net.conv1 = nn.Conv2d(3 * cfg.num_frames, old.out_channels, kernel_size=old.kernel_size,
                          stride=old.stride, padding=old.padding, bias=False)
    with torch.no_grad():  # EVA's init: the RGB filters repeated over the frames, divided by k
        net.conv1.weight.copy_(old.weight.repeat(1, cfg.num_frames, 1, 1) / cfg.num_frames)
    return net, feat


def _load_backbone_weights(net: nn.Module, path: str) -> None:
    """Local ImageNet weights (a torchvision state dict file), loaded strictly, never fetched."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a matching torchvision ResNet state dict: {e}") from e


class _TinyBackbone(nn.Sequential):
    """Four 3x3 conv blocks (the first three stride 2): 64x64 -> 8x8 feature map."""

    def __init__(self, in_ch: int, channels: tuple[int, ...]):
        layers, c = [], in_ch
        for i, out in enumerate(channels):
            stride = 2 if i < len(channels) - 1 else 1
            layers += [nn.Conv2d(c, out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        super().__init__(*layers)


class IDM(nn.Module):
    def __init__(self, config: IDMConfig):
        super().__init__()
        if not isinstance(config, IDMConfig):
            raise TypeError(f"IDM needs an IDMConfig (IDMConfig.for_embodiment(emb, ...)), got {type(config).__name__}")
        self.config = cfg = config
        self.late = cfg.fusion == "late"
        if cfg.variant == "tiny":
            in_ch = 3 if self.late else 3 * cfg.num_frames
            self.backbone, feat = _TinyBackbone(in_ch, cfg.tiny_channels), cfg.tiny_channels[-1]
        else:
            self.backbone, feat = _resnet_backbone(cfg)
        self.spatial_softmax = SpatialSoftmax()
        h1, h2 = cfg.hidden
        head_in = 2 * feat * (cfg.num_frames if self.late else 1)
        # Indices 0/1/4/6 hold the weights: the keys of EVA's checkpoint.
        self.mlp_head = nn.Sequential(
            nn.Linear(head_in, h1), nn.LayerNorm(h1), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(h1, h2), nn.GELU(), nn.Linear(h2, cfg.action_dim),
        )
        for m in self.mlp_head:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.register_buffer("action_mean", torch.zeros(cfg.action_dim), persistent=False)
        self.register_buffer("action_std", torch.ones(cfg.action_dim), persistent=False)

    # ---- network -------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.variant == "tiny":
            return self.backbone(x)
        b = self.backbone  # torchvision ResNet without avgpool/fc
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Late fusion: (N, 3, S, S) normalised frames -> (N, 2C) keypoints, one frame each."""
        if not self.late:
            raise RuntimeError("encode() is per frame: only late-fusion IDMs have a frame encoder")
        return self.spatial_softmax(self.features(frames))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3k, S, S) or (B, k, 3, S, S), ImageNet-normalised -> (B, action_dim) normalised."""
        if x.dim() == 5:
            x = x.flatten(1, 2)
        if self.late:
            b = x.shape[0]
            return self.mlp_head(self.encode(x.reshape(b * self.config.num_frames, 3, *x.shape[-2:])).reshape(b, -1))
        return self.mlp_head(self.spatial_softmax(self.features(x)))

    # ---- normalisation -------------------------------------------------------------------
    def set_normalization(self, mean, std) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        d = self.config.action_dim
        if mean.numel() != d or std.numel() != d:
            raise ValueError(f"normalisation stats must have {d} values, got {mean.numel()} and {std.numel()}")
        for name, t in (("action_mean", mean), ("action_std", std)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} holds NaN/inf (dims {torch.nonzero(~torch.isfinite(t)).flatten().tolist()})")
        if not torch.all(std > 0):
            raise ValueError("action_std must be > 0")
        self.action_mean.copy_(mean)
        self.action_std.copy_(std)

    def denormalize(self, out: torch.Tensor) -> torch.Tensor:
        return out * self.action_std + self.action_mean

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_mean) / self.action_std

    # ---- inference -----------------------------------------------------------------------
    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) in [0, 1] (or uint8) -> (T, 3, S, S) resized, ImageNet-normalised."""
        video = _check_video(video)
        dev = self.action_mean.device
        v = video.to(dev)
        v = v.float() / 255.0 if v.dtype == torch.uint8 else v.float()
        return normalize_imagenet(resize_square(v, self.config.image_size))

    def window_indices(self, num_frames: int) -> torch.Tensor:
        """(T, k) frame indices of each window, clamped at the ends."""
        t = torch.arange(num_frames).unsqueeze(1)
        off = torch.tensor(self.config.frame_offsets).unsqueeze(0)
        return (t + off).clamp_(0, num_frames - 1)

    @torch.inference_mode()
    def predict(self, video: torch.Tensor, batch_size: int = 32, precision: str = "float32") -> torch.Tensor:
        """(T, 3, H, W) video in [0, 1] -> (T, action_dim) de-normalised actions, float32, on CPU.

        A batch of clips (B, T, 3, H, W) -> (B, T, action_dim) goes through as one stream (windows
        stay inside their clip). Each frame is resized and normalised once. Early fusion: the
        windows go through the network in chunks of `batch_size`, gathered by index. Late fusion:
        each frame is encoded once (chunks of `batch_size` frames) and the windows gather
        keypoints, so a video costs T encoder passes instead of k*T. `precision="bfloat16"` runs
        convs and linears under autocast (faster on CPUs with AVX512-BF16/AMX and on GPUs; about
        1e-2 relative error, see bench/idm_precision.py); "auto" picks it where it is native.
        """
        video = torch.as_tensor(video)
        clips = None
        if video.dim() == 5:
            clips = video.shape[:2]
            video = video.reshape(clips[0] * clips[1], *video.shape[2:])
        frames_per_clip = clips[1] if clips else None
        was_training = self.training
        self.eval()
        try:
            with _autocast(precision, self.action_mean.device):
                out = self._predict_batched(video, max(1, int(batch_size)), frames_per_clip)
            out = self.denormalize(out.float()).cpu()
            return out.reshape(*clips, -1) if clips else out
        finally:
            self.train(was_training)

    def _predict_batched(self, video: torch.Tensor, step: int, frames_per_clip: int | None) -> torch.Tensor:
        frames = self.preprocess(video)
        n = frames_per_clip or frames.shape[0]
        idx = self.window_indices(n)  # clip b's windows: the same indices shifted by b*n
        idx = (idx.unsqueeze(0) + torch.arange(0, frames.shape[0], n).view(-1, 1, 1)).flatten(0, 1).to(frames.device)
        nhwc = torch.channels_last  # lets oneDNN/cuDNN use their faster batched conv kernels
        if self.late:
            keys = torch.cat([self.encode(frames[s:s + step].contiguous(memory_format=nhwc)).float()
                              for s in range(0, frames.shape[0], step)])
            return self.mlp_head(keys[idx].flatten(1))
        outs = []
        for start in range(0, idx.shape[0], step):
            chunk = idx[start:start + step]  # (b, k)
            x = frames[chunk.reshape(-1)].reshape(chunk.shape[0], -1, *frames.shape[-2:])
            outs.append(self(x.contiguous(memory_format=nhwc)))
        return torch.cat(outs)

    @torch.inference_mode()
    def predict_per_frame(self, video: torch.Tensor) -> torch.Tensor:
        """Reference: EVA's per-frame loop (window built, resized and run one frame at a time)."""
        was_training = self.training
        self.eval()
        try:
            video = _check_video(video)
            idx = self.window_indices(video.shape[0])
            outs = [self(self.preprocess(video[row]).reshape(1, -1, *((self.config.image_size,) * 2)))
                    for row in idx]
            return self.denormalize(torch.cat(outs)).float().cpu()
        finally:
            self.train(was_training)


def resize_square(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) float -> (N, 3, size, size): the IDM's input resize (bilinear, antialiased).

    Training resizes its frames with this too, so train and predict see the same pixels."""
    if frames.shape[-2:] == (size, size):
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True if `device` computes bf16 natively (CPU: AVX512-BF16/AMX via oneDNN; CUDA: Ampere+)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"IDM precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return precision


def _autocast(precision: str, device: torch.device):
    on = resolve_precision(precision, device) == "bfloat16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on)


def _check_video(video) -> torch.Tensor:
    if not isinstance(video, torch.Tensor):
        video = torch.as_tensor(video)
    if video.dim() != 4 or video.shape[1] != 3:
        raise ValueError(f"IDM video must be (T, 3, H, W) or clips (B, T, 3, H, W), got shape {tuple(video.shape)}")
    if video.shape[0] < 1:
        raise ValueError("IDM video has no frames")
    return video


def build_idm(config: IDMConfig) -> IDM:
    """A randomly initialised IDM (or with local backbone weights if config.backbone_weights)."""
    return IDM(config)
