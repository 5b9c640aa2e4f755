"""The toy MM-DiT as a `StableDiffusion3Pipeline`: the shipped transformer (mfexp/assets/toy_mmdit) around the toy
UNet model's frozen VAE, tokenizer and CLIP text encoder (mfexp/assets/toy_t2i), shared rather than duplicated.

The text encoder is a `CLIPTextModelWithProjection` whose projection the toy UNet never had: the trainer
(`train_mmdit`) draws it at random (seed 0) and keeps it frozen; the shipped folder holds it
(`text_projection.safetensors`, 16 KiB). One encoder serves as both of SD3's CLIP encoders; there is no T5.

Shipped folder layout: `transformer/` (diffusers `SD3Transformer2DModel`, safetensors), `text_projection.safetensors`
(its metadata: `clip_length`, the CLIP tokens a caption is padded to, 77 when absent),
`toy_mmdit.json` (provenance and measured quality), `train_log.txt`.

    python -m mfexp.toyworld.toy_mmdit RUN_DIR/snapshots/transformer_1000.safetensors DEST

exports a training checkpoint to DEST in the shipped layout; `generator.model.path=DEST` (family sd3) and
`benchmarks/toy_quality.py --model toy_mmdit --model-path DEST` load it. `--pos-grid G` widens the positional grid of
a model trained with a smaller one (a patch-1 run from before the 32-token default: 16 tokens, which an N = 4 mosaic's
72 px region crops overflow) without moving any position it was trained on (`widen_pos_grid`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

SCHEDULER_SHIFT = 1.0  # the trainer samples s ~ logit-normal and the sampler uses unshifted sigmas


def toy_parts(seed: int = 0, clip_length: int = 77) -> dict:
    """The frozen toy parts: `vae`, `tokenizer` (padding captions to `clip_length` tokens) and `text_encoder` (its
    projection drawn from `seed` as the trainer draws it)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer
    from transformers.utils import logging

    from mfexp.assets import toy_t2i_path

    toy = toy_t2i_path()
    vae = AutoencoderKL.from_pretrained(toy / "vae", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(toy / "tokenizer", local_files_only=True, model_max_length=clip_length)
    torch.manual_seed(seed)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # "text_projection newly initialized": intended
    try:
        text = CLIPTextModelWithProjection.from_pretrained(toy / "text_encoder", local_files_only=True)
    finally:
        logging.set_verbosity(verbosity)
    for module in (vae, text):
        module.eval().requires_grad_(False)
    return {"vae": vae, "tokenizer": tokenizer, "text_encoder": text}


def assemble(transformer, parts: dict):
    """A `StableDiffusion3Pipeline` of `transformer` and the toy `parts` (flow-matching Euler, shift 1). The toy VAE's
    `shift_factor` (None: no shift) becomes 0.0, which the SD3 pipeline's own decode needs."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    if parts["vae"].config.shift_factor is None:
        parts["vae"].register_to_config(shift_factor=0.0)

    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT),
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        text_encoder_2=parts["text_encoder"],
        tokenizer_2=parts["tokenizer"],
        text_encoder_3=None,
        tokenizer_3=None,
    )


def recorded_clip_length(folder: Path) -> int:
    """The CLIP length a shipped / exported folder's model was trained with (none recorded: SD3's 77)."""
    from safetensors import safe_open

    with safe_open(str(folder / "text_projection.safetensors"), "pt") as f:
        return int((f.metadata() or {}).get("clip_length", 77))


def load_toy_mmdit(folder: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """The toy MM-DiT pipeline from a folder in the shipped layout (default: mfexp/assets/toy_mmdit), offline."""
    from diffusers import SD3Transformer2DModel
    from safetensors.torch import load_file

    from mfexp.assets import toy_mmdit_path

    folder = Path(folder) if folder is not None else toy_mmdit_path()
    if not (folder / "transformer").is_dir():
        raise FileNotFoundError(f"{folder}: no toy MM-DiT here (transformer/ missing)")
    projection = folder / "text_projection.safetensors"
    parts = toy_parts(clip_length=recorded_clip_length(folder))
    parts["text_encoder"].text_projection.load_state_dict(load_file(str(projection)))
    transformer = SD3Transformer2DModel.from_pretrained(folder / "transformer", local_files_only=True)
    transformer.eval().requires_grad_(False)
    pipe = assemble(transformer, parts)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def widened_sincos(embed_dim: int, old: int, new: int, base_size: int, interpolation_scale: float) -> torch.Tensor:
    """SD3's 2-D sin-cos table (`PatchEmbed`, `pos_embed_max_size=old`) extended outward to `new` tokens a side at
    the same spacing: its centred `old` x `old` block is the old table, so every centred crop keeps its embeddings."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed_from_grid

    if new < old or (new - old) % 2:
        raise ValueError(f"a positional grid of {old} widens only to a larger one by an even step, not to {new}")
    pos = (torch.arange(new, dtype=torch.float32) - (new - old) // 2) * (base_size / old) / interpolation_scale
    grid = torch.stack(torch.meshgrid(pos, pos, indexing="xy"), dim=0).reshape(2, 1, new, new)
    return get_2d_sincos_pos_embed_from_grid(embed_dim, grid, output_type="pt")


def widen_pos_grid(transformer, grid: int) -> None:
    """Give a trained `SD3Transformer2DModel` a `grid`-token positional grid (in place, config included): the crops
    it was trained on see the same embeddings; larger ones reach positions just past its old edge, where the sin-cos
    table goes on smoothly."""
    embed = transformer.pos_embed
    old = embed.pos_embed_max_size
    if grid == old:
        return
    table = widened_sincos(embed.pos_embed.shape[-1], old, grid, embed.base_size, embed.interpolation_scale)
    embed.pos_embed = table.unsqueeze(0).to(embed.pos_embed)
    embed.pos_embed_max_size = grid
    transformer.register_to_config(pos_embed_max_size=grid)


def export(weights: str | Path, dest: str | Path, seed: int = 0, pos_grid: int | None = None) -> Path:
    """Write a trainer checkpoint's transformer (`weights`, safetensors) and the text projection drawn from `seed`
    to `dest` in the shipped layout. The architecture is the one the trainer recorded in the file's metadata (files
    written before it did so: the trainer's defaults, `MMDiTTrainConfig`); `pos_grid` widens its positional grid
    (`widen_pos_grid`)."""
    from safetensors.torch import load_file, save_file

    from mfexp.toyworld.train_mmdit import MMDiTTrainConfig, build_pipeline, recorded_architecture

    recorded = recorded_architecture(Path(weights))
    recorded.setdefault("pos_grid", 16)  # files written before it was recorded: the trainer used 16 then
    pipe = build_pipeline(MMDiTTrainConfig(seed=seed, **recorded))
    pipe.transformer.load_state_dict(load_file(str(weights)))
    pipe.transformer.eval()
    if pos_grid is not None:
        widen_pos_grid(pipe.transformer, pos_grid)
    dest = Path(dest)
    pipe.transformer.save_pretrained(str(dest / "transformer"), safe_serialization=True)
    projection = {k: v.contiguous() for k, v in pipe.text_encoder.text_projection.state_dict().items()}
    save_file(
        projection, str(dest / "text_projection.safetensors"), metadata={"clip_length": str(pipe.tokenizer_max_length)}
    )
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Export a toy MM-DiT checkpoint (see module docstring).")
    p.add_argument("weights", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--pos-grid", type=int, help="widen the positional grid to this many tokens a side")
    args = p.parse_args(argv)
    print(export(args.weights, args.dest, pos_grid=args.pos_grid))


if __name__ == "__main__":
    main()
