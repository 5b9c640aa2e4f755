"""SDXL (`StableDiffusionXLPipeline`): a UNet with `attn2` cross-attention (same layer names as SD 1.x, so
attention.py's layer selection applies), two CLIP text encoders (penultimate states concatenated; the second's
pooled projection), and the added time ids of each region crop: original size = target size = the crop's pixel
size, crop top-left (0, 0), as the XL pipeline sets them for a plain image of the crop's size."""

from __future__ import annotations

import torch

from ..attention import capture_cross_attention, selected_layers
from ..prompts import object_token_index
from . import Family


class SDXLFamily(Family):
    def __init__(self, pipe, gcfg):
        self.pipe, self.cfg = pipe, gcfg
        self.model = pipe.unet
        self.stride = self.align = int(pipe.vae_scale_factor)
        self.tokenizer = pipe.tokenizer
        att = gcfg.attention
        self.layers = selected_layers(self.model, self.stride, list(att.resolutions), list(att.blocks))

    def token_index(self, prompt: str, name: str) -> int:
        """Position in the CLIP ids (both SDXL tokenizers put the object token at the same position)."""
        return object_token_index(self.tokenizer, prompt, name)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Sequence embeddings (B, 77, 2048) and pooled embeddings (B, 1280). An empty prompt is all zeros when the
        model's `force_zeros_for_empty_prompt` is set (SDXL base: what its pipeline uses as the negative prompt)."""
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        if self.pipe.config.get("force_zeros_for_empty_prompt", False):
            empty = torch.tensor([p == "" for p in prompts], device=embeds.device)
            embeds = torch.where(empty[:, None, None], torch.zeros_like(embeds), embeds)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        dtype = self.model.dtype
        return {"encoder_hidden_states": embeds.to(dtype), "text_embeds": pooled.to(dtype)}

    def time_ids(self, h: int, w: int, rows: int) -> torch.Tensor:
        """(rows, 6): original size, crop top-left, target size of a (h, w) latent crop, in pixels."""
        hp, wp = h * self.stride, w * self.stride
        ids = torch.tensor([hp, wp, 0, 0, hp, wp], device=self.device, dtype=self.model.dtype)
        return ids.expand(rows, 6)

    def initial_noise(self, latent_hw: tuple[int, int], seed: int) -> torch.Tensor:
        gen = torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn((1, int(self.model.config.in_channels), *latent_hw), generator=gen)
        return noise

    def set_timesteps(self, scheduler, steps: int, latent_hw) -> None:
        scheduler.set_timesteps(int(steps), device=self.device)

    @torch.no_grad()
    def predict(self, crops: torch.Tensor, t, cond: dict, uncond: dict, boxes: list, scale: float) -> torch.Tensor:
        """One UNet call on [uncond x B, cond x B], classifier-free guidance with `scale`."""
        b, _, h, w = crops.shape
        text = {k: torch.cat([uncond[k].expand(b, *uncond[k].shape[1:]), cond[k]]) for k in cond}
        added = {"text_embeds": text["text_embeds"], "time_ids": self.time_ids(h, w, 2 * b)}
        out = self.model(
            torch.cat([crops, crops]), t, encoder_hidden_states=text["encoder_hidden_states"], added_cond_kwargs=added
        ).sample
        u, c = out.chunk(2)
        return u + float(scale) * (c - u)

    def capture(self, store):
        return capture_cross_attention(self.model, store, self.layers)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The SDXL VAE overflows in fp16 (`force_upcast`): it decodes in fp32 then."""
        vae = self.pipe.vae
        dtype = torch.float32 if vae.dtype == torch.float16 and vae.config.force_upcast else vae.dtype
        if vae.dtype != dtype:
            vae.to(dtype)
        return vae.decode(latents.to(dtype) / vae.config.scaling_factor).sample.float()


def tiny_pipeline(seed: int = 0):
    """An SDXL-architecture `StableDiffusionXLPipeline` with seeded random weights (CPU tests): 2 UNet levels with
    cross-attention, addition time embeddings, two tiny CLIP encoders (the second with a projection), a VAE of
    stride 2."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from mfexp.assets import load_tokenizer

    from .tiny import eval_mode, tiny_clip_config, tiny_unet, tiny_vae

    tokenizer = load_tokenizer()
    torch.manual_seed(seed)
    unet = tiny_unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + the pooled width 32
        cross_attention_dim=64,
    )

    def clip_config():
        return tiny_clip_config(tokenizer, projection_dim=32)

    vae = tiny_vae()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return eval_mode(
        StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(clip_config()),
            text_encoder_2=CLIPTextModelWithProjection(clip_config()),
            tokenizer=tokenizer,
            tokenizer_2=load_tokenizer(),
            unet=unet,
            scheduler=scheduler,
        )
    )
