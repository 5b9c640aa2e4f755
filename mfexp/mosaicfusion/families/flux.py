"""FLUX (`FluxPipeline`): a `FluxTransformer2DModel` on 2x2-packed latents; joint attention over [text tokens,
image tokens] (double-stream blocks; single-stream blocks see the same concatenation); rotary position ids: zeros
for the text, (0, row, col) of the crop's own token grid for the image; text = T5's sequence, pooled = CLIP's
pooled output; FLUX-dev's guidance embedding (`guidance_embeds`), and no classifier-free guidance unless
`generator.model.true_cfg_scale` > 1 (the distilled models are run without it)."""

from __future__ import annotations

import numpy as np
import torch

from .mmdit import MMDiTFamily, flow_shift_mu


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): each token holds a 2x2 patch, channels outermost (FLUX's layout)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `pack` for a (h, w) latent."""
    b, _, d = tokens.shape
    x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """(h/2 * w/2, 3) rotary ids (0, row, col) of a (h, w) latent's token grid, row-major as `pack` orders tokens."""
    rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3)
    return ids.to(device=device, dtype=dtype)


class FluxFamily(MMDiTFamily):
    """The object token indexes the T5 ids (text part first in the joint sequence: no offset)."""

    text_first = True
    text_offset = 0

    def __init__(self, pipe, gcfg):
        super().__init__(pipe, gcfg)
        self.latent_channels = int(self.model.config.in_channels) // 4
        self.tokenizer = pipe.tokenizer_2
        self.text_length = self.max_sequence_length
        self.true_cfg_scale = float(gcfg.model.true_cfg_scale)
        if gcfg.get("guidance_window") is not None:
            raise ValueError(
                "generator.guidance_window windows classifier-free guidance (generator.guidance_scale); the flux "
                "family guides through its guidance embedding or true_cfg_scale instead: set it to null"
            )

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        dtype = self.model.dtype
        return {"encoder_hidden_states": embeds.to(dtype), "pooled_projections": pooled.to(dtype)}

    def set_timesteps(self, scheduler, steps: int, latent_hw) -> None:
        """FLUX's sigmas: linspace(1, 1/steps, steps), shifted by mu from the image tokens when the scheduler has
        `use_dynamic_shifting` (FLUX-dev; FLUX-schnell's schedule is unshifted)."""
        steps = int(steps)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        h, w = latent_hw
        mu = flow_shift_mu((h // 2) * (w // 2), scheduler.config)
        scheduler.set_timesteps(sigmas=sigmas, device=self.device, mu=mu)

    @torch.no_grad()
    def predict(self, crops: torch.Tensor, t, cond: dict, uncond: dict, boxes: list, scale: float) -> torch.Tensor:
        """One transformer call: cond rows only, or [uncond x B, cond x B] with true_cfg_scale > 1; `scale`
        (generator.guidance_scale) goes to the guidance embedding of the guidance-distilled models."""
        b, _, h, w = crops.shape
        guided = self.true_cfg_scale > 1
        x = pack(crops)
        if guided:
            x = torch.cat([x, x])
            text = {k: torch.cat([uncond[k].expand(b, *uncond[k].shape[1:]), cond[k]]) for k in cond}
        else:
            text = cond
        rows = x.shape[0]
        dtype = x.dtype
        timestep = torch.as_tensor(t, device=x.device).to(dtype).expand(rows) / 1000
        guidance = None
        if self.model.config.guidance_embeds:
            guidance = torch.full((rows,), float(scale), device=x.device, dtype=torch.float32)
        txt_ids = torch.zeros(text["encoder_hidden_states"].shape[1], 3, device=x.device, dtype=dtype)
        out = self.model(
            hidden_states=x,
            timestep=timestep,
            guidance=guidance,
            txt_ids=txt_ids,
            img_ids=image_ids(h, w, x.device, dtype),
            return_dict=False,
            **text,
        )[0]
        out = unpack(out, h, w)
        if not guided:
            return out
        u, c = out.chunk(2)
        return u + self.true_cfg_scale * (c - u)


def tiny_pipeline(seed: int = 0, guidance_embeds: bool = False):
    """A FLUX-architecture `FluxPipeline` with seeded random weights (CPU tests): 1 double-stream and 1
    single-stream block, 4 latent channels (16 packed), a VAE of stride 2, the CLIP fixture for the pooled text and
    the SentencePiece fixture with a tiny T5 for the sequence."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from mfexp.assets import load_t5_tokenizer, load_tokenizer

    from .tiny import eval_mode, tiny_clip_config, tiny_t5_encoder, tiny_vae

    tokenizer, t5_tokenizer = load_tokenizer(), load_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )
    text_encoder = CLIPTextModel(tiny_clip_config(tokenizer))
    vae = tiny_vae(shift_factor=0.1159, scaling_factor=0.3611)
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=guidance_embeds, base_image_seq_len=256, max_image_seq_len=4096
    )
    return eval_mode(
        FluxPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=tiny_t5_encoder(t5_tokenizer, 32),
            tokenizer_2=t5_tokenizer,
            transformer=transformer,
        )
    )
