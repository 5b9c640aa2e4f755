"""From how much noise does the toy MM-DiT keep an object's shape? Real renders of every toy category are encoded,
noised to flow time s0 (x = (1 - s0) x0 + s0 noise), and integrated back to s = 0 with the model's own caption,
Euler steps and classifier-free guidance; the toy_quality classifier then names each result. s0 = 1 is plain
generation (its class fidelity); a model that draws shapes well keeps them from any s0 where they are still visible.

    python benchmarks/toy_renoise.py [--model-path DIR] [--s0 1 0.9 0.7 0.5 0.3] [--classifier FILE] [--out F.json]

Reads: class fidelity per s0 (shapes the result takes instead, counted). Single seed, 48 objects (+-7 points).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from toy_quality import classify_by_reference, kept_classifier  # noqa: E402

from mfexp.toyworld.world import build_categories, caption, split_name  # noqa: E402


@torch.no_grad()
def renoised_samples(pipe, names: list[str], s0: float, steps: int, guidance: float, seed: int) -> np.ndarray:
    """(len(names), 64, 64, 3) uint8: a real render of each category noised to `s0`, integrated back to 0."""
    from mfexp.toyworld.train_t2i import render_batch

    images, _ = render_batch(names, 64, np.random.default_rng(seed))
    vae = pipe.vae
    shift = vae.config.shift_factor or 0.0
    x0 = (vae.encode(images).latent_dist.mean - shift) * vae.config.scaling_factor
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
        [caption(n) for n in names],
        None,
        None,
        device="cpu",
        do_classifier_free_guidance=True,
        negative_prompt=[""] * len(names),
        max_sequence_length=8,
    )
    text, pooled = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    x = (1 - s0) * x0 + s0 * noise
    sigmas = np.linspace(s0, 0.0, steps + 1)
    for a, b in zip(sigmas[:-1], sigmas[1:]):
        t = torch.full((2 * len(x),), a * 1000.0)
        v = pipe.transformer(
            hidden_states=torch.cat([x, x]),
            timestep=t,
            encoder_hidden_states=text,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
        uncond, cond = v.chunk(2)
        x = x + (b - a) * (uncond + guidance * (cond - uncond))
    out = vae.decode(x / vae.config.scaling_factor + shift).sample
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", type=Path, help="toy MM-DiT folder (default: the shipped weights)")
    p.add_argument("--s0", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3])
    p.add_argument("--steps", type=int, default=25, help="Euler steps from s0 to 0 (the generator's 25)")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--classifier", type=Path, help="classifier state file: loaded if it exists, else written")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from mfexp.toyworld.toy_mmdit import load_toy_mmdit

    cats = build_categories()
    names = [c["name"] for c in cats]
    net, _ = kept_classifier(args.classifier, cats)
    pipe = load_toy_mmdit(args.model_path)
    wanted = [split_name(n)[1] for n in names]
    report = {"model": str(args.model_path or "shipped"), "steps": args.steps, "guidance": args.guidance, "s0": {}}
    for s0 in args.s0:
        pred, _ = classify_by_reference(
            net, list(renoised_samples(pipe, names, s0, args.steps, args.guidance, args.seed))
        )
        got = [split_name(names[k])[1] if k >= 0 else "none" for k in pred]
        swaps = Counter(f"{w}->{g}" for w, g in zip(wanted, got) if w != g)
        fidelity = float(np.mean(pred == np.arange(len(names))))
        report["s0"][str(s0)] = {"class_fidelity": round(fidelity, 4), "shape_swaps": dict(swaps.most_common())}
        print(f"s0 {s0:.2f}: class fidelity {fidelity:.3f}  {dict(swaps.most_common(6))}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
