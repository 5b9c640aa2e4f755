"""What SD3 and FLUX share: flow-matching noise and timesteps, the VAE's shift, the object token of a CLIP or T5
tokenizer, and the capture on joint-attention blocks (mmdit_attention.py)."""

from __future__ import annotations

import torch

from ..prompts import object_token_index
from . import Family
from .mmdit_attention import capture_joint_attention, selected_blocks


def flow_shift_mu(image_seq_len: int, config) -> float:
    """Resolution-dependent shift of the flow-matching schedule (`use_dynamic_shifting`): linear in the number of
    image tokens between (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift) of the scheduler config."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return base_shift + slope * (image_seq_len - base_len)


class MMDiTFamily(Family):
    """Base of the MM-DiT families. Subclasses set `text_first`, `tokenizer`, `text_offset`, `text_length` and
    implement `encode` and `predict`. Latents are unpacked (1|B, C, h, w) everywhere outside `predict`."""

    text_first: bool
    text_offset: int  # where the tokenizer's ids start in the text part of the joint sequence
    text_length: int  # tokens the tokenizer's part may use (its context)

    @property
    def patch(self) -> int:
        """Latent cells per token side: FLUX's 2x2 packing (SD3Family reads its transformer's patch size)."""
        return 2

    def __init__(self, pipe, gcfg):
        self.pipe, self.cfg = pipe, gcfg
        self.model = pipe.transformer
        self.stride = int(pipe.vae_scale_factor)
        self.align = self.stride * self.patch  # one token = patch x patch latent cells
        self.resolution = self.align
        if str(gcfg.get("scheduler", "default")) != "default":
            raise ValueError(
                f"generator.scheduler={gcfg.scheduler}: SD3 and FLUX run their flow-matching scheduler (use default)"
            )
        m = gcfg.model
        self.max_sequence_length = int(m.max_sequence_length)
        self.blocks = selected_blocks(
            self.model,
            range(self._joint_count()) if m.joint_blocks is None else list(m.joint_blocks),
            list(m.get("single_blocks") or []),
        )
        resolutions = [int(r) for r in gcfg.attention.resolutions]
        if resolutions != [self.resolution]:
            raise ValueError(
                f"generator.attention.resolutions={resolutions}: an MM-DiT's joint attention has one map, at "
                f"1/{self.resolution} of the image; set [{self.resolution}]"
            )

    def _joint_count(self) -> int:
        return len(self.model.transformer_blocks)

    def token_index(self, prompt: str, name: str) -> int:
        """The object token's position in the text part of the joint sequence (the capture adds the image tokens'
        offset where they come first: SD3)."""
        return self.text_offset + object_token_index(self.tokenizer, prompt, name, self.text_length)

    def initial_noise(self, latent_hw: tuple[int, int], seed: int) -> torch.Tensor:
        """Standard normal canvas latent (flow matching starts at sigma = 1), drawn on the CPU from `seed`."""
        gen = torch.Generator("cpu").manual_seed(int(seed))
        return torch.randn((1, self.latent_channels, *latent_hw), generator=gen)

    def set_timesteps(self, scheduler, steps: int, latent_hw) -> None:
        """The scheduler's own sigmas; with `use_dynamic_shifting` (FLUX-dev, SD3.5 configs that set it) the shift mu
        follows the number of image tokens of `latent_hw` (the size of what one denoiser call sees)."""
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            h, w = latent_hw
            kwargs["mu"] = flow_shift_mu((h // self.patch) * (w // self.patch), scheduler.config)
        scheduler.set_timesteps(int(steps), device=self.device, **kwargs)

    def capture(self, store):
        return capture_joint_attention(self.model, store, self.blocks, self.resolution, self.text_first, self.patch)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        x = latents.to(vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        return vae.decode(x).sample.float()
