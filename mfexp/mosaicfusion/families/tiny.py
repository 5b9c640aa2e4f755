"""Small shared parts of the tiny random pipelines (CPU tests)."""

from __future__ import annotations


def tiny_t5_encoder(tokenizer, d_model: int):
    """A 2-layer T5 encoder of width `d_model` for the SentencePiece fixture's vocabulary (random weights)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=d_model,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )


def eval_mode(pipe):
    """Every torch module of a freshly built pipeline in eval mode (a new T5 has dropout 0.1 in train mode)."""
    for component in pipe.components.values():
        if hasattr(component, "eval"):
            component.eval()
    return pipe


def tiny_clip_config(tokenizer, hidden_size: int = 32, **extra):
    """A 2-layer CLIP text config for the committed CLIP tokenizer's vocabulary (`extra`: e.g. projection_dim)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def tiny_unet(**extra):
    """A 2-level cross-attention UNet2DConditionModel (widths 32, 64; `extra`: the family's conditioning kwargs)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8,
        **extra,
    )


def tiny_vae(**extra):
    """A 2-level AutoencoderKL (stride 2, 4 latent channels; `extra`: e.g. shift_factor, scaling_factor)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[16, 32],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        sample_size=32,
        **extra,
    )
