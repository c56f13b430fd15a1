"""IDMConfig: which network, at which resolution, with which frame window.

Variants (all: conv backbone -> spatial softmax (learnable temperature) -> MLP):
- ``resnet_plus``: EVA's released IDM (Vidar "Resnet_plus"): ResNet-50, 9-channel conv1, 512x512.
  Its state-dict keys match ``IDM_singleview.pt`` exactly (EVA's released IDM).
- ``resnet18``: the light default for a robot PC: ResNet-18 at 224x224, same head layout, late fusion.
- ``tiny``: a four-layer conv stack at 64x64 for CPU tests and the closed-loop demo.

Fusion (how the k frames of a window meet):
- ``early`` (EVA): the frames are stacked on channels into conv1 (3k channels).
- ``late``: one shared encoder (3-channel conv1 -> spatial softmax) per frame; the k keypoint
  vectors are concatenated into the MLP. A video's frames are then encoded once each, not k
  times, which is what makes batched decoding cheap on a CPU (docs/idm_and_reward.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

VARIANTS = ("resnet_plus", "resnet18", "tiny")
FUSIONS = ("early", "late")
PRECISIONS = ("float32", "bfloat16", "auto")  # auto: bfloat16 where the device has native bf16 (model.resolve_precision)

# Per-variant defaults: input size, MLP hidden widths, fusion.
_DEFAULTS = {
    "resnet_plus": dict(image_size=512, hidden=(1024, 512), fusion="early"),
    "resnet18": dict(image_size=224, hidden=(1024, 512), fusion="late"),
    "tiny": dict(image_size=64, hidden=(128, 64), fusion="early"),
}


@dataclass
class IDMConfig:
    variant: str = "resnet18"
    image_size: int | None = None  # square input side; None -> the variant's default
    frame_offsets: tuple[int, ...] = (-1, 0, 1)  # window around t, clamped at the ends (EVA)
    action_dim: int | None = None  # required: the embodiment's action_dim (IDMConfig.for_embodiment)
    hidden: tuple[int, ...] | None = None  # MLP widths; None -> variant default
    fusion: str | None = None  # "early" | "late"; None -> variant default
    dropout: float = 0.1
    tiny_channels: tuple[int, ...] = (16, 32, 64, 64)  # only for variant "tiny"
    backbone_weights: str | None = None  # optional local torchvision ResNet .pth (never downloaded)
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. training data), kept in config.json

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"IDMConfig.variant must be one of {VARIANTS}, got {self.variant!r}")
        if isinstance(self.action_dim, bool) or not isinstance(self.action_dim, int) or self.action_dim < 1:
            raise ValueError(f"IDMConfig.action_dim must be a positive int (the embodiment's action_dim), "
                             f"got {self.action_dim!r}")
        d = _DEFAULTS[self.variant]
        if self.image_size is None:
            self.image_size = d["image_size"]
        if self.hidden is None:
            self.hidden = d["hidden"]
        if self.fusion is None:
            self.fusion = d["fusion"]
        if self.fusion not in FUSIONS:
            raise ValueError(f"IDMConfig.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        self.frame_offsets = tuple(int(o) for o in self.frame_offsets)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.tiny_channels = tuple(int(c) for c in self.tiny_channels)
        if len(self.hidden) != 2:
            raise ValueError(f"IDMConfig.hidden must have 2 widths (EVA head layout), got {self.hidden}")
        if self.image_size < 32:
            raise ValueError(f"IDMConfig.image_size must be >= 32, got {self.image_size}")

    @classmethod
    def for_embodiment(cls, embodiment, **kw) -> "IDMConfig":
        """A config whose output is the embodiment's action vector."""
        return cls(action_dim=embodiment.action_dim, **kw)

    @property
    def num_frames(self) -> int:
        return len(self.frame_offsets)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("frame_offsets", "hidden", "tiny_channels"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "IDMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"IDMConfig: unknown keys {unknown}")
        # Files written before `fusion` existed all held early-fusion models.
        return cls(**{"fusion": "early", **d})
