"""The toy text-to-image model: a tiny latent diffusion model made of the standard diffusers components.

It is assembled as a ``diffusers.StableDiffusionPipeline`` (AutoencoderKL + UNet2DConditionModel with
cross-attention + CLIPTextModel + the offline CLIP tokenizer fixture + an SD-style PNDM scheduler), so a saved
folder loads with ``StableDiffusionPipeline.from_pretrained(dir)`` exactly like SD v1.4 (``generator/model=toy``:
``mfexp.mosaicfusion.models.load_pipeline``). ``python -m mfexp.toyworld.train_t2i`` trains it; the result ships in
``mfexp/assets/toy_t2i`` (see ``mfexp.assets``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

# SD v1.x noise schedule / scheduler config
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}


@dataclass
class ToyT2IConfig:
    """Sizes of the toy model's components (defaults: the shipped model)."""

    image_size: int = 64
    # VAE: len(vae_channels) - 1 downsamplings -> stride 2 ** (len - 1)
    vae_channels: tuple[int, ...] = (32, 64, 64)
    vae_layers_per_block: int = 1
    latent_channels: int = 4
    vae_mid_attention: bool = False  # fully convolutional VAE (trains on crops, runs at any size)
    # UNet: one block per entry; cross-attention in the first len(unet_channels) - unet_plain_blocks blocks
    unet_channels: tuple[int, ...] = (32, 64)
    unet_plain_blocks: int = 0
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    # CLIP text encoder
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 256
    max_position_embeddings: int = 77

    @property
    def vae_stride(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_stride

    @classmethod
    def from_dict(cls, d: dict) -> ToyT2IConfig:
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _norm_groups(channels) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if all(c % g == 0 for c in channels):
            return g
    return 1


def build_components(cfg: ToyT2IConfig | None = None, seed: int = 0) -> dict[str, Any]:
    """Freshly initialised components (seeded): ``vae``, ``text_encoder``, ``tokenizer``, ``unet``, ``scheduler``."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mfexp.assets import load_tokenizer

    cfg = cfg or ToyT2IConfig()
    tokenizer = load_tokenizer()
    torch.manual_seed(seed)
    nv = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * nv,
        up_block_types=("UpDecoderBlock2D",) * nv,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=_norm_groups(cfg.vae_channels),
        mid_block_add_attention=cfg.vae_mid_attention,
        sample_size=cfg.image_size,
        scaling_factor=1.0,  # set from the trained encoder's latent std after stage 1
    )
    nu = len(cfg.unet_channels)
    n_attn = nu - cfg.unet_plain_blocks
    down = tuple("CrossAttnDownBlock2D" if i < n_attn else "DownBlock2D" for i in range(nu))
    up = tuple(("CrossAttnUpBlock2D" if i < n_attn else "UpBlock2D") for i in range(nu))[::-1]
    unet = UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers_per_block,
        attention_head_dim=cfg.unet_heads,  # diffusers' legacy name: the number of heads
        cross_attention_dim=cfg.text_hidden,
        norm_num_groups=_norm_groups(cfg.unet_channels),
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_hidden,
            intermediate_size=cfg.text_intermediate,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=cfg.text_hidden,
        )
    )
    scheduler = PNDMScheduler.from_config(
        SD_SCHEDULER_CONFIG
    )  # unknown keys (clip_sample) kept in config, like SD v1.4
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet, "scheduler": scheduler}


def assemble_pipeline(components: dict[str, Any]):
    """A ``StableDiffusionPipeline`` from the components (no safety checker / feature extractor)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=components["unet"],
        scheduler=components["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


TOY_INFO_FILE = "toy_t2i.json"  # training provenance + model config, written next to model_index.json


def save_toy_pipeline(pipe, out_dir: str | os.PathLike, cfg: ToyT2IConfig, info: dict | None = None) -> Path:
    out = Path(out_dir)
    pipe.save_pretrained(str(out), safe_serialization=True)
    meta = {"model": cfg.to_dict(), **(info or {})}
    (out / TOY_INFO_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out
