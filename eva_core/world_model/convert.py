"""eva-convert-ckpt: an LVP/EVA Lightning checkpoint -> a diffusers transformer directory.

Run once on the GPU host; deployment then loads safetensors and never unpickles:

    eva-convert-ckpt --ckpt eva_i2v_14B.ckpt --config Wan2.1-I2V-14B-480P-Diffusers/transformer --out eva_transformer
    WanTransformer3DModel.from_pretrained("eva_transformer")

The weights keep their stored dtype and values (bit-identical). An existing --out directory is
refused unless --overwrite; even then it is replaced only once the new one is complete (written
beside it, then swapped). Errors are one line naming the file (exit 2; --debug for the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from eva_core.atomic_io import atomic_dir
from eva_core.cli import add_debug_arg, add_overwrite_arg, check_new_dir, cli_main
from eva_core.world_model import checkpoint as ck

WEIGHTS_NAME = "diffusion_pytorch_model{suffix}.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


def save_transformer_dir(model, sd: dict[str, torch.Tensor], out_dir: Path, max_shard_size: str = "5GB") -> None:
    """Write config.json + sharded safetensors in the layout `from_pretrained` reads, with progress."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    model.save_config(out_dir)
    split = split_torch_state_dict_into_shards(sd, filename_pattern=WEIGHTS_NAME, max_shard_size=max_shard_size)
    total = sum(t.numel() * t.element_size() for t in sd.values())
    with tqdm(total=total, unit="B", unit_scale=True, desc="write safetensors") as bar:
        for filename, names in split.filename_to_tensors.items():
            shard = {n: sd[n].contiguous() for n in names}
            save_file(shard, str(out_dir / filename), metadata={"format": "pt"})
            bar.update(sum(t.numel() * t.element_size() for t in shard.values()))
    if split.is_sharded:
        index = {"metadata": {"total_size": total}, "weight_map": split.tensor_to_filename}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def convert(ckpt: str, config: str, out: str, trust_pickle: bool = False, max_shard_size: str = "5GB",
            overwrite: bool = False) -> Path:
    check_new_dir(out, overwrite)  # refuse an existing output before reading a 33 GB file
    model = ck.empty_transformer(config)  # check the config first, too
    with tqdm(total=4, desc="convert", unit="stage") as stages:
        stages.set_postfix_str("load (mmap)")
        raw = ck.load_torch_checkpoint(ckpt, trust_pickle=trust_pickle)
        orig = ck.lightning_transformer_state_dict(raw, source=ckpt)
        stages.update()
        stages.set_postfix_str("rename (diffusers converter)")
        sd, origin = ck.convert_original_to_diffusers(orig)
        stages.update()
        stages.set_postfix_str("strict check")
        ck.check_state_dict(model, sd, ckpt, origin)
        ck.require_finite(sd, ckpt, origin)   # never write NaN weights into a model dir
        stages.update()
        stages.set_postfix_str("write")
        with atomic_dir(out, overwrite=overwrite) as tmp:
            save_transformer_dir(model, sd, tmp, max_shard_size=max_shard_size)
        stages.update()
    return Path(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eva-convert-ckpt",
        description="Convert an LVP/EVA Lightning checkpoint (state_dict with 'model.'-prefixed original Wan "
                    "keys) into a diffusers WanTransformer3DModel directory (config.json + safetensors).",
    )
    p.add_argument("--ckpt", required=True, help="Lightning .ckpt file (e.g. eva_i2v_14B.ckpt, lvp_14B.ckpt)")
    p.add_argument("--config", required=True,
                   help="directory holding the transformer config.json (e.g. <Wan2.1-I2V-14B-480P-Diffusers>/transformer)")
    p.add_argument("--out", required=True, help="output directory (written beside, then moved in)")
    add_overwrite_arg(p)
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling if the file holds non-tensor objects (runs code from the file!)")
    p.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (default 5GB)")
    add_debug_arg(p)
    return p


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = convert(args.ckpt, args.config, args.out, trust_pickle=args.trust_pickle,
                      max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    except TypeError as err:  # a checkpoint of the wrong structure (lightning_transformer_state_dict)
        raise ValueError(str(err)) from err
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_main("eva-convert-ckpt", run, argv)


if __name__ == "__main__":
    sys.exit(main())
