"""The `unet` family: Stable Diffusion 1.x / 2.x (a UNet with `attn2` cross-attention, one CLIP text encoder)."""

from __future__ import annotations

import contextlib

import torch

from ..attention import CrossAttentionCapture, installed, selected_layers
from ..prompts import object_token_index
from . import Family


class UNetFamily(Family):
    """Classifier-free guidance on a UNet; the object token's cross-attention captured on the chosen `attn2` layers
    (`generator.attention.resolutions` x `blocks`). `generator.compile=true` compiles the UNet (regions of one shape
    bucket give static shapes)."""

    def __init__(self, pipe, gcfg):
        self.pipe, self.tokenizer = pipe, pipe.tokenizer
        self.stride = self.align = int(pipe.vae_scale_factor)
        self.model = pipe.unet
        att = gcfg.attention
        layers = selected_layers(pipe.unet, self.stride, list(att.resolutions), list(att.blocks))
        self.processors = {name: CrossAttentionCapture(None, name, res) for name, res in layers.items()}
        self.denoiser = torch.compile(pipe.unet) if gcfg.get("compile") else pipe.unet

    def token_index(self, prompt: str, name: str) -> int:
        return object_token_index(self.tokenizer, prompt, name)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        enc = self.pipe.text_encoder
        return {"encoder_hidden_states": enc(tok.input_ids.to(enc.device))[0].to(self.dtype)}

    def initial_noise(self, latent_hw: tuple[int, int], seed: int) -> torch.Tensor:
        gen = torch.Generator("cpu").manual_seed(seed)
        return torch.randn((1, self.pipe.unet.config.in_channels, *latent_hw), generator=gen)

    def set_timesteps(self, scheduler, steps: int, latent_hw: tuple[int, int]) -> None:
        scheduler.set_timesteps(steps, device=self.device)

    def predict(self, crops: torch.Tensor, t, cond: dict, uncond: dict, boxes: list, scale: float) -> torch.Tensor:
        n = crops.shape[0]
        enc = torch.cat([uncond["encoder_hidden_states"].expand(n, -1, -1), cond["encoder_hidden_states"]])
        out = self.denoiser(torch.cat([crops, crops]), t, encoder_hidden_states=enc).sample
        e_u, e_c = out.chunk(2)
        return e_u + float(scale) * (e_c - e_u)

    @contextlib.contextmanager
    def capture(self, store):
        for proc in self.processors.values():
            proc.store = store
        try:
            with installed(self.pipe.unet, self.processors):
                yield store
        finally:
            for proc in self.processors.values():
                proc.store = None

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.float()
