"""Denoiser families: what differs between model families behind one small interface (`Family`), so that the mosaic
algorithm (mfexp/mosaicfusion/pipeline.py) is written once. A family is chosen by `generator.model.family`."""

from __future__ import annotations

import contextlib

import torch

from mfexp.targets import locate

# family name -> its class, by dotted path (imported when chosen)
FAMILIES = {
    "unet": "mfexp.mosaicfusion.families.unet.UNetFamily",
    "sdxl": "mfexp.mosaicfusion.families.sdxl.SDXLFamily",
    "sd3": "mfexp.mosaicfusion.families.sd3.SD3Family",
    "flux": "mfexp.mosaicfusion.families.flux.FluxFamily",
}


class Family:
    """One denoiser family. The pipeline calls only these; every tensor is batch-first.

    Attributes: `model` (the denoiser), `stride` (image pixels per latent cell, the VAE's scale factor), `align`
    (region coordinates are multiples of this many pixels: the stride times the denoiser's patch size), `tokenizer`
    (whose ids the object token indexes); `device` and `dtype` are the denoiser's.
    """

    model: torch.nn.Module
    stride: int
    align: int

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def token_index(self, prompt: str, name: str) -> int:
        """The object token's position among the keys that the capturing attention sees."""
        raise NotImplementedError

    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Text conditioning, one row per prompt."""
        raise NotImplementedError

    def initial_noise(self, latent_hw: tuple[int, int], seed: int) -> torch.Tensor:
        """The canvas's standard normal noise (1, C, h, w), unpacked, from `seed` alone, on the CPU (so devices
        agree); the pipeline scales it by the scheduler's `init_noise_sigma` and moves it to the device."""
        raise NotImplementedError

    def set_timesteps(self, scheduler, steps: int, latent_hw: tuple[int, int]) -> None:
        raise NotImplementedError

    def predict(self, crops: torch.Tensor, t, cond: dict, uncond: dict, boxes: list, scale: float) -> torch.Tensor:
        """The guided prediction (B, C, h, w) for a batch of same-shaped latent crops; `cond` holds B rows, `uncond`
        one row; `boxes` are the crops' latent Regions (for the families that condition on position); `scale` is
        this step's guidance scale (generator.guidance_scale, or generator.guidance_window's inside its window)."""
        raise NotImplementedError

    def capture(self, store) -> contextlib.AbstractContextManager:
        """Install the capturing attention processors, feeding `store`; restore the originals on exit."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents -> (B, 3, H, W) images in [-1, 1], fp32."""
        raise NotImplementedError


def make_family(pipe, gcfg) -> Family:
    """The family `generator.model.family` names (default: unet) around a loaded pipeline."""
    name = gcfg.model.get("family", "unet")
    if name not in FAMILIES:
        raise ValueError(f"generator.model.family must be one of {', '.join(FAMILIES)}, got {name!r}")
    return locate(FAMILIES[name], "generator.model.family")(pipe, gcfg)
