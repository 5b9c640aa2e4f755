"""SD3 / SD3.5 (`StableDiffusion3Pipeline`): an `SD3Transformer2DModel` with joint attention over [image tokens,
text tokens]; text = CLIP-L and CLIP-G penultimate states (concatenated, zero-padded to the joint width) followed
by T5's (`text_encoder_3` may be None: zeros, as diffusers does); pooled = both CLIPs' pooled outputs; flow-matching
Euler scheduler; classifier-free guidance with the unconditional rows first."""

from __future__ import annotations

import torch

from .mmdit import MMDiTFamily


class SD3Family(MMDiTFamily):
    """`generator.model.object_token`: `clip` (the CLIP-L ids, the first 77 text tokens) or `t5` (the T5 ids,
    after the 77 CLIP tokens; needs `text_encoder_3`)."""

    text_first = False

    @property
    def patch(self) -> int:  # 2 in every released SD3 / SD3.5; the toy MM-DiT may be trained with 1
        return int(self.model.config.patch_size)

    def __init__(self, pipe, gcfg):
        super().__init__(pipe, gcfg)
        self.latent_channels = int(self.model.config.in_channels)
        which = str(gcfg.model.object_token)
        clip_length = int(pipe.tokenizer_max_length)
        if which == "clip":
            self.tokenizer, self.text_offset, self.text_length = pipe.tokenizer, 0, clip_length
        elif which == "t5":
            if pipe.text_encoder_3 is None:
                raise ValueError("generator.model.object_token=t5 needs the pipeline's T5 encoder (text_encoder_3)")
            self.tokenizer, self.text_offset, self.text_length = pipe.tokenizer_3, clip_length, self.max_sequence_length
        else:
            raise ValueError(f"generator.model.object_token must be clip or t5, got {which!r}")

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        dtype = self.model.dtype
        return {"encoder_hidden_states": embeds.to(dtype), "pooled_projections": pooled.to(dtype)}

    @torch.no_grad()
    def predict(self, crops: torch.Tensor, t, cond: dict, uncond: dict, boxes: list, scale: float) -> torch.Tensor:
        """One transformer call on [uncond x B, cond x B] (cond only when `scale` <= 1)."""
        b = crops.shape[0]
        g = float(scale)
        guided = g > 1
        if guided:
            x = torch.cat([crops, crops])
            text = {k: torch.cat([uncond[k].expand(b, *uncond[k].shape[1:]), cond[k]]) for k in cond}
        else:
            x, text = crops, cond
        timestep = torch.as_tensor(t, device=crops.device).to(crops.dtype).expand(x.shape[0])
        out = self.model(hidden_states=x, timestep=timestep, return_dict=False, **text)[0]
        if not guided:
            return out
        u, c = out.chunk(2)
        return u + g * (c - u)


def tiny_pipeline(seed: int = 0, t5: bool = True, patch_size: int = 2):
    """An SD3-architecture `StableDiffusion3Pipeline` with seeded random weights (CPU tests): 2 joint blocks (the
    last `context_pre_only`, as in SD3), 4 latent channels, patches of `patch_size` latent cells, a VAE of stride 2,
    CLIP tokenizers from the fixture, and a tiny T5 (the SentencePiece fixture) or none."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    from mfexp.assets import load_t5_tokenizer, load_tokenizer

    from .tiny import eval_mode, tiny_clip_config, tiny_t5_encoder, tiny_vae

    tokenizer = load_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=patch_size,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=32,
        qk_norm="rms_norm",  # as SD3.5
    )

    def clip():
        return CLIPTextModelWithProjection(tiny_clip_config(tokenizer, 16, projection_dim=32))

    text_encoder, text_encoder_2 = clip(), clip()
    vae = tiny_vae(shift_factor=0.0609, scaling_factor=1.5035)
    t5_tokenizer = load_t5_tokenizer() if t5 else None
    return eval_mode(
        StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=load_tokenizer(),
            text_encoder_3=tiny_t5_encoder(t5_tokenizer, 32) if t5 else None,
            tokenizer_3=t5_tokenizer,
        )
    )
