"""Tiny random Wan2.1 I2V components for tests and the CPU demo.

They keep the real I2V architecture (36-channel input = 16 noise + 4 mask + 16 condition, image
cross-attention through `added_kv_proj_dim`/`image_dim`, a UMT5 text encoder, a CLIP vision
encoder, the causal Wan VAE with stride (4, 8, 8) and z=16); only the widths and depths shrink.
Nothing is downloaded: the tokenizer is a byte-level one built in code.
"""

from __future__ import annotations

from typing import Any

import torch

from eva_core.world_model.config import TinyConfig

# the sizes' one home is TinyConfig (WorldModelConfig.tiny); this dict is its defaults
TINY_DEFAULTS: dict[str, Any] = TinyConfig().to_dict()


def tiny_sizes(overrides: TinyConfig | dict[str, Any] | None = None) -> dict[str, Any]:
    """The sizes as a dict: TinyConfig's defaults updated by `overrides` (checked: ConfigError)."""
    if isinstance(overrides, TinyConfig):
        return overrides.to_dict()
    return TinyConfig.from_dict(overrides or {}, section="world_model.tiny").to_dict()


def tiny_transformer_config(sizes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A WanTransformer3DModel config with the Wan2.1 I2V layout (see the 14B config in FACTS §4)."""
    s = tiny_sizes(sizes)
    inner = s["num_attention_heads"] * s["attention_head_dim"]
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=s["num_attention_heads"],
        attention_head_dim=s["attention_head_dim"],
        in_channels=36,
        out_channels=16,
        text_dim=s["text_dim"],
        freq_dim=s["freq_dim"],
        ffn_dim=s["ffn_dim"],
        num_layers=s["num_layers"],
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=s["image_dim"],
        added_kv_proj_dim=inner,  # as in the 14B I2V config: image tokens are projected to `inner` first
        rope_max_seq_len=1024,
    )


def build_tiny_transformer(sizes: dict[str, Any] | None = None):
    from diffusers import WanTransformer3DModel

    s = tiny_sizes(sizes)
    torch.manual_seed(s["seed"])
    return WanTransformer3DModel(**tiny_transformer_config(s)).eval()


def build_tiny_vae(sizes: dict[str, Any] | None = None):
    from diffusers import AutoencoderKLWan

    s = tiny_sizes(sizes)
    torch.manual_seed(s["seed"] + 1)
    return AutoencoderKLWan(
        base_dim=s["vae_base_dim"], z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def build_tiny_text_encoder(sizes: dict[str, Any] | None = None, vocab_size: int = 259):
    from transformers import UMT5Config, UMT5EncoderModel

    s = tiny_sizes(sizes)
    torch.manual_seed(s["seed"] + 2)
    cfg = UMT5Config(
        vocab_size=vocab_size, d_model=s["text_dim"], d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    return UMT5EncoderModel(cfg).eval()


def build_tiny_image_encoder(sizes: dict[str, Any] | None = None):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    s = tiny_sizes(sizes)
    torch.manual_seed(s["seed"] + 3)
    cfg = CLIPVisionConfig(
        hidden_size=s["image_dim"], intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=s["clip_image_size"], patch_size=s["clip_patch_size"], projection_dim=16,
    )
    return CLIPVisionModel(cfg).eval()


def build_byte_tokenizer():
    """A lossless byte-level tokenizer (259 ids: <pad>=0, </s>=1, <unk>=2, then 256 bytes).

    T5-style: no BOS, `</s>` appended, padding id 0. Built in code, so nothing is downloaded.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
