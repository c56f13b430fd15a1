"""Offline inference (`eva-generate`): image + instruction -> video chunk, decoded actions, reward.

The equivalent of EVA's inference entry point on our loaders: the world model from a config
(the `world_model:` section that eva-train-sft/grpo write, or any WorldModelConfig keys), an
optional LoRA adapter and history clip, and optional best-of-N rejection sampling. The IDM
decodes the chunk into actions and scores them with the executability reward.

    eva-generate --image first.png --instruction "pick up the cup" --output-dir runs/gen \\
        --model-config runs/grpo_tiny/world_model.yaml --idm random_tiny
    eva-generate --image f.png --instruction "..." --output-dir out --model-config wm.yaml \\
        --idm /models/IDM_singleview.pt --lora runs/grpo/lora --history prev.mp4 --best-of 4

Writes, in a new --output-dir (swapped in when complete; a non-empty one needs --overwrite):
video.mp4, actions.png (the decoded action curves), actions.npy, result.json (reward, its
components, best-of-N scores, timing, seed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from eva_core import yaml_io
from eva_core.config import ConfigError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="eva-generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--image", required=True, help="the current camera image (png/jpg, RGB)")
    p.add_argument("--instruction", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--model-config", default=None,
                   help="YAML: a `world_model:` section (what training writes) or WorldModelConfig keys; default tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a world-model key")
    p.add_argument("--lora", default=None, help="a LoRA adapter directory (merged on load)")
    p.add_argument("--history", default=None, help="a video of the frames before the image (at the model fps)")
    p.add_argument("--best-of", type=int, default=1, help="draw N chunks and keep the highest reward")
    p.add_argument("--idm", default=None, help="IDM checkpoint for the actions and reward (default: the config's reward_idm)")
    p.add_argument("--embodiment", default=None, help="embodiment name or YAML (default: the default embodiment)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir once the new one is complete")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def model_config(args):
    """The checked WorldModelConfig: --model-config, then --set, --lora, --idm, --best-of. A typo,
    wrong type or bad value is a one-line ConfigError naming the file, section and key."""
    from eva_core.world_model.config import WorldModelConfig
    from training.common import load_yaml

    cfg: dict = {}
    source, section = "--set", ""
    if args.model_config:
        data = load_yaml(args.model_config)
        source, section = str(args.model_config), "world_model" if "world_model" in data else ""
        cfg = dict(data.get("world_model", data) or {})
    for item in args.set:
        if "=" not in item:
            raise ConfigError("--set", "", item, "expected key=value")
        k, v = item.split("=", 1)
        cfg[k] = yaml_io.load(v)
    if args.lora:
        prior = cfg.get("lora")
        cfg["lora"] = ([*prior] if isinstance(prior, list) else [prior] if prior else []) + [args.lora]
        cfg["merge_lora"] = True
    if args.idm:
        cfg["reward_idm"] = args.idm
    if not cfg.get("reward_idm"):
        raise ValueError("no IDM for the actions and reward: pass --idm PATH (or set reward_idm in the model config)")
    cfg["best_of"] = int(args.best_of)
    return WorldModelConfig.from_dict(cfg, source=source, section=section)


def read_image(path) -> np.ndarray:
    import imageio.v3 as iio

    img = np.asarray(iio.imread(path))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"{path}: expected an RGB image, got shape {img.shape}")
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def generate(argv=None) -> dict:
    from eva_core.atomic_io import write_json
    from eva_core.cli import prepare_output_dir
    from eva_core.data.video_clips import read_video
    from eva_core.reward.plots import plot_action_curves
    from eva_core.world_model import WorldModel
    from training.common import load_emb, write_mp4

    args = parse_args(argv)
    out = Path(args.output_dir)
    wcfg = model_config(args)
    image = read_image(args.image)
    history = list(read_video(args.history)[0]) if args.history else None
    emb = load_emb(args.embodiment)
    # every input read; the output appears only once complete (an existing one needs --overwrite)
    with prepare_output_dir(out, overwrite=args.overwrite, flag="--output-dir", resumable=False, staged=True) as tmp:
        wm = WorldModel.from_config(wcfg, embodiment=emb)
        print(f"eva-generate: {wm.num_frames} frames {wm.height}x{wm.width} at {wm.fps} fps, best of {wcfg.best_of}")
        frames = wm.generate(image, args.instruction, history=history, seed=args.seed)
        result = wm.scorer.score_video(_to_video(frames))  # the chosen chunk's actions + reward
        res = result.score
        actions = result.actions[0].numpy()
        write_mp4(tmp / "video.mp4", frames, wm.fps)
        np.save(tmp / "actions.npy", actions)
        import matplotlib.pyplot as plt

        fig = plot_action_curves(actions, tmp / "actions.png", fps=wm.fps, names=list(emb.joint_names),
                                 lower=np.asarray(emb.pos_lower), upper=np.asarray(emb.pos_upper),
                                 title=f"{args.instruction!r}: reward {float(res[0]):.3f}")
        plt.close(fig)
        summary = {"instruction": args.instruction, "image": str(args.image), "reward": float(res[0]),
                   "components": {k: float(v[0]) for k, v in result.components.items()},
                   "frames": int(frames.shape[0]), "fps": wm.fps,
                   "context_frames": wm.last_info.get("context_frames"),
                   "seed": wm.last_info.get("seed"), "best_of": wm.last_info.get("best_of"),
                   "timing_s": wm.last_timing, "lora": wcfg.lora}
        write_json(tmp / "result.json", summary)
    print(f"eva-generate: reward {summary['reward']:.3f}; wrote {out}/video.mp4, actions.png, result.json")
    return summary


def _to_video(frames: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None].float() / 127.5 - 1.0


def main(argv=None) -> int:
    from training.common import run_cli

    return run_cli("eva-generate", generate, argv)


if __name__ == "__main__":
    raise SystemExit(main())
