"""Load a pipeline of a denoiser family (SD 1.x, SDXL, SD3, FLUX): a local folder, a hub id (when allowed), the
shipped toy model, or a tiny seeded random pipeline built from config."""

from __future__ import annotations

import os
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_CHOICES = (*DTYPES, "auto")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_dtype(name: str, accelerator: str = "auto") -> str:
    """`generator.dtype`, with `auto` made concrete for the device the generator will run on (`trainer.accelerator`):
    bf16 on a CUDA GPU that supports it and on a CPU that computes it natively, fp32 elsewhere (MPS included)."""
    if name != "auto":
        return name
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if accelerator == "auto" and torch.backends.mps.is_available():
        return "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPE_CHOICES:
        raise ValueError(f"generator.dtype must be one of {', '.join(DTYPE_CHOICES)}, got {name!r}")
    return DTYPES[resolve_dtype(name)]


def check_device_dtype(dtype: str, accelerator: str) -> None:
    """fp16 needs a GPU: on a CPU the UNet's activations overflow to NaN and every mosaic is skipped."""
    gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    if dtype == "fp16" and (accelerator == "cpu" or (accelerator == "auto" and not gpu)):
        raise ValueError(
            f"generator.dtype=fp16 needs a GPU (trainer.accelerator={accelerator}, on a CPU fp16 gives NaN): "
            "use fp32 or bf16"
        )


PIPELINE_CLASSES = {  # generator.model.family -> the diffusers pipeline class it loads
    "unet": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}


def pipeline_class(family: str):
    if family not in PIPELINE_CLASSES:
        raise ValueError(f"generator.model.family must be one of {', '.join(PIPELINE_CLASSES)}, got {family!r}")
    import diffusers

    return getattr(diffusers, PIPELINE_CLASSES[family])


def _extra_kwargs(family: str) -> dict:
    """SD 1.x pipelines are loaded without their safety checker."""
    return {"safety_checker": None, "requires_safety_checker": False} if family == "unet" else {}


def tiny_family_pipeline(family: str, seed: int, size: str):
    """The tiny seeded random pipeline of a family (`generator.model.path=tiny_random`)."""
    if family == "unet":
        return tiny_random_pipeline(seed, size)
    if family == "sdxl":
        from .families.sdxl import tiny_pipeline

        return tiny_pipeline(seed)
    if family == "sd3":
        from .families.sd3 import tiny_pipeline as tiny_sd3

        return tiny_sd3(seed, t5=size != "tiny_no_t5")
    if family == "flux":
        from .families.flux import tiny_pipeline as tiny_flux

        return tiny_flux(seed, guidance_embeds=size == "tiny_dev")
    raise ValueError(f"generator.model.family must be one of {', '.join(PIPELINE_CLASSES)}, got {family!r}")


def load_pipeline(model_cfg, dtype: str):
    """The diffusers pipeline of `generator.model` (its `family`: unet -> StableDiffusionPipeline without safety
    checker, sdxl -> StableDiffusionXLPipeline, sd3 -> StableDiffusion3Pipeline, flux -> FluxPipeline), its weights
    in `dtype` (`generator.dtype`: fp32 | fp16 | bf16 | auto, see `resolve_dtype`). `path: null` is the shipped toy
    model of the family: the toy UNet (unet) or the toy MM-DiT (sd3); an sd3 folder with
    `text_projection.safetensors` is a toy MM-DiT export."""
    family = str(model_cfg.get("family", "unet"))
    cls = pipeline_class(family)
    path = model_cfg.path
    dtype = torch_dtype(dtype)
    if path == "tiny_random":
        pipe = tiny_family_pipeline(family, model_cfg.seed, model_cfg.size)
        return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
    if family == "sd3" and (path is None or (Path(path) / "text_projection.safetensors").is_file()):
        from mfexp.toyworld.toy_mmdit import load_toy_mmdit  # the toy MM-DiT's layout: its transformer only

        return load_toy_mmdit(path, dtype)
    if path is None:
        from mfexp.assets import toy_t2i_path

        path = toy_t2i_path()
    if Path(path).is_dir():
        return load_folder(path, dtype, family)
    if not model_cfg.allow_download or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(
            f"model {path!r} is not a local folder and hub downloads are off: download it "
            f"(huggingface-cli download {path} --local-dir DIR) and set generator.model.path=DIR, "
            "or set generator.model.allow_download=true"
        )
    return cls.from_pretrained(path, revision=model_cfg.revision, dtype=dtype, **_extra_kwargs(family))


def load_folder(path: str | os.PathLike, dtype: torch.dtype = torch.float32, family: str = "unet"):
    """A local diffusers pipeline folder (the shipped toy model, a downloaded model) as the family's pipeline;
    a folder that is not one, or whose weights are corrupt or incomplete, is a one-line error."""
    cls = pipeline_class(family)
    if not (Path(path) / "model_index.json").is_file():
        raise FileNotFoundError(
            f"generator.model.path={path} is a folder without model_index.json (not a diffusers pipeline)"
        )
    try:
        return cls.from_pretrained(path, local_files_only=True, dtype=dtype, **_extra_kwargs(family))
    except Exception as e:  # safetensors / json / shape errors all mean the same thing to the user
        msg = " ".join(str(e).split())[:200]
        raise ValueError(
            f"generator.model.path={path}: the weights are corrupt or incomplete ({type(e).__name__}: {msg})"
        ) from None


def tiny_random_pipeline(seed: int = 0, size: str = "tiny"):
    """An SD-architecture pipeline with seeded random weights: `tiny` (tests, CPU) or `sd14` (full size, GPUs)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mfexp.assets import load_tokenizer

    from .families.tiny import tiny_clip_config, tiny_unet, tiny_vae

    tokenizer = load_tokenizer()
    torch.manual_seed(seed)
    if size == "tiny":
        unet = tiny_unet(cross_attention_dim=32, attention_head_dim=8)
        vae = tiny_vae()
        text = tiny_clip_config(tokenizer)
    elif size == "sd14":
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(
            block_out_channels=[128, 256, 512, 512],
            latent_channels=4,
            sample_size=512,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
        )
        text = CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            vocab_size=max(len(tokenizer), 49408),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    else:
        raise ValueError(f"generator.model.size must be tiny or sd14, got {size!r}")
    text_encoder = CLIPTextModel(text)
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


SCHEDULERS = {
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
}


def set_scheduler(pipe, name: str):
    """Swap the pipeline's scheduler for another of the same configuration ('default' keeps the model's own)."""
    if name == "default":
        return pipe
    if name not in SCHEDULERS:
        raise ValueError(f"generator.scheduler must be default or one of {list(SCHEDULERS)}, got {name!r}")
    import diffusers

    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)
    return pipe
