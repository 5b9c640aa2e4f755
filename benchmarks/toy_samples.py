"""A picture of what a toy text-to-image model draws: one sample per shape (rows) and colour (columns), the same seed
for every model, with the generator's own prompt, steps, guidance and scheduler.

    python benchmarks/toy_samples.py --model toy_mmdit [--model-path DIR] [--colours red blue green] --out grid.jpg

Each row starts with a real render of that shape (the toy world's renderer, first colour) for reference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mfexp.compose import compose  # noqa: E402
from mfexp.toyworld.world import SHAPES, caption, render_single_object_image  # noqa: E402


def grid(args) -> np.ndarray:
    """(rows x 64, (1 + colours) x 64, 3) uint8: per shape a real render, then one sample per colour."""
    from mfexp.mosaicfusion.models import load_pipeline, set_scheduler

    torch.set_num_threads(args.threads)
    model = [f"generator.model.path={args.model_path.resolve()}"] if args.model_path else []
    cfg = compose([f"generator/model={args.model}", *model]).generator
    pipe = set_scheduler(load_pipeline(cfg.model, cfg.dtype), cfg.scheduler)
    pipe.set_progress_bar_config(disable=True)
    size = int(cfg.region_size[0])
    # an MM-DiT's (zero) T5 context as the generator gives it: the pipeline's default is 256 tokens, not what the toy
    # was trained with (8), and the extra zero tokens take attention from the caption
    context = {"max_sequence_length": int(cfg.model.max_sequence_length)} if "max_sequence_length" in cfg.model else {}
    rows = []
    for shape in SHAPES:
        prompts = [caption(f"{colour}_{shape}", with_def=True) for colour in args.colours]
        images = pipe(
            prompts,
            height=size,
            width=size,
            num_inference_steps=args.steps or int(cfg.num_inference_steps),
            guidance_scale=float(cfg.guidance_scale),
            generator=torch.Generator().manual_seed(args.seed),
            output_type="np",
            **context,
        ).images
        real, _ = render_single_object_image(f"{args.colours[0]}_{shape}", size, np.random.default_rng(args.seed))
        samples = [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images]
        rows.append(np.concatenate([real, *samples], 1))
    return np.concatenate(rows, 0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="generator/model config: toy (the toy UNet) or toy_mmdit")
    p.add_argument("--model-path", type=Path, help="toy pipeline folder (default: the shipped weights)")
    p.add_argument("--colours", nargs="+", default=["red", "blue", "green", "yellow"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.add_argument("--scale", type=int, default=2, help="pixel repeat of the saved picture")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    picture = grid(args).repeat(args.scale, 0).repeat(args.scale, 1)
    Image.fromarray(picture).save(args.out, quality=90)
    print(args.out)


if __name__ == "__main__":
    main()
