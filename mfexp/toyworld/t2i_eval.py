"""Quality checks of a toy text-to-image pipeline: class fidelity and cross-attention localisation.

    python -m mfexp.toyworld.t2i_eval [--path DIR] [--per-category 2] [--steps 25] [--guidance 4.0]

For each category it generates single objects with the MosaicFusion prompt ``"a photo of a single {name}, {def}"``,
collects the object token's (last name token) cross-attention probabilities (conditional half, all steps, all
cross-attention layers), turns them into a mask as MosaicFusion does (per resolution mean over heads/layers, max-1
normalise, bicubic resize, average, Otsu), and compares with the toy world's reference annotator on the generated
image (saturated-colour segmentation, largest component). Fidelity: the reference classifier (hue + shape template
matching; 100 % on real renders) must name the requested colour and shape.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from mfexp.toyworld.world import build_categories, caption, classify_colour, classify_shape, segment_saturated, split_name


class TokenAttnCapture:
    """attn2 processor summing (over calls) the cross-attention of one token per sample, conditional half only."""

    def __init__(self, sums: dict, counts: dict, name: str, token_idx: torch.Tensor):
        self.sums, self.counts, self.name, self.token_idx = sums, counts, name, token_idx

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        b, n, _ = hidden_states.shape
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        v = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(q, k, None)
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        p = probs.view(b, attn.heads, n, -1)[b - len(self.token_idx) :].float().mean(1)  # cond half, mean heads
        tok = p[torch.arange(p.shape[0]), :, self.token_idx.to(p.device)]  # (n_prompts, n)
        self.sums[self.name] = self.sums.get(self.name, 0) + tok.detach()
        self.counts[self.name] = self.counts.get(self.name, 0) + 1
        return out / attn.rescale_output_factor


def otsu_threshold(x: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(x.ravel(), bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1e-12)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def attention_to_mask(sums: dict, counts: dict, size: int, include_mid: bool = False) -> np.ndarray:
    """Per-resolution mean over layers, max-1 normalise, bicubic resize, average, rescale -> (n_prompts, size, size)."""
    by_res = defaultdict(list)
    for name, s in sums.items():
        if not include_mid and name.startswith("mid_block"):
            continue
        by_res[int(round(math.sqrt(s.shape[1])))].append(s / counts[name])
    maps = []
    for r, lst in by_res.items():
        m = torch.stack(lst).mean(0).view(-1, 1, r, r)
        m = m / m.amax((2, 3), keepdim=True).clamp_min(1e-12)
        maps.append(F.interpolate(m, size=(size, size), mode="bicubic", align_corners=False))
    m = torch.stack(maps).mean(0)[:, 0].clamp_min(0)
    m = m / m.amax((1, 2), keepdim=True).clamp_min(1e-12)
    return m.cpu().numpy()


@torch.no_grad()
def evaluate_t2i(pipe, per_category: int = 2, steps: int = 25, guidance: float = 4.0, seed: int = 0, batch: int = 16, with_def: bool = True) -> dict:
    """Generate ``per_category`` images per category; return fidelity / IoU numbers (and per-category details)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    names = [c["name"] for c in build_categories()]
    jobs = [(n, seed + i) for i in range(per_category) for n in names]
    size = pipe.unet.config.sample_size * (2 ** (len(pipe.vae.config.block_out_channels) - 1))
    tok = pipe.tokenizer
    rows = []
    original = dict(pipe.unet.attn_processors)
    try:
        for b0 in range(0, len(jobs), batch):
            chunk = jobs[b0 : b0 + batch]
            prompts = [caption(n, with_def=with_def) for n, _ in chunk]
            idx = []
            for p, (n, _) in zip(prompts, chunk):
                toks = tok.convert_ids_to_tokens(tok(p).input_ids)
                idx.append(toks.index(split_name(n)[1] + "</w>"))
            idx = torch.tensor(idx)
            sums, counts = {}, {}
            procs = {
                k: TokenAttnCapture(sums, counts, k.rsplit(".processor", 1)[0], idx) if k.endswith("attn2.processor") else AttnProcessor2_0()
                for k in pipe.unet.attn_processors
            }
            pipe.unet.set_attn_processor(procs)
            gens = [torch.Generator().manual_seed(s) for _, s in chunk]
            images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, height=size, width=size, generator=gens, output_type="np").images
            maps = attention_to_mask(sums, counts, size)
            for (n, s), img, amap in zip(chunk, images, maps):
                rgb = (img * 255).round().astype(np.uint8)
                ref = segment_saturated(rgb)
                pred = amap > otsu_threshold(amap)
                inter, union = (pred & ref).sum(), (pred | ref).sum()
                colour, shape = split_name(n)
                got_c = classify_colour(rgb, ref) if ref.sum() >= 4 else None
                got_s, fit = classify_shape(ref)
                rows.append(
                    {
                        "name": n,
                        "seed": s,
                        "iou": float(inter / union) if union else 0.0,
                        "colour_ok": bool(got_c == colour),
                        "shape_ok": bool(got_s == shape and ref.sum() >= 4),
                        "shape_fit": fit,
                        "object_area": int(ref.sum()),
                    }
                )
    finally:
        pipe.unet.set_attn_processor(original)
    iou = np.array([r["iou"] for r in rows])
    ok = np.array([r["colour_ok"] and r["shape_ok"] for r in rows])
    return {
        "num_images": len(rows),
        "fidelity": float(ok.mean()),
        "colour_acc": float(np.mean([r["colour_ok"] for r in rows])),
        "shape_acc": float(np.mean([r["shape_ok"] for r in rows])),
        "miou": float(iou.mean()),
        "iou_ge_0.75": float((iou >= 0.75).mean()),
        "steps": steps,
        "guidance": guidance,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    from mfexp.toyworld.t2i import load_toy_pipeline

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", default=None)
    p.add_argument("--per-category", type=int, default=2)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-def", action="store_true")
    p.add_argument("--scheduler", default="pndm", choices=["pndm", "ddim"])
    p.add_argument("--json", default=None, help="write the full result here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    pipe = load_toy_pipeline(a.path)
    if a.scheduler == "ddim":
        from diffusers import DDIMScheduler

        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    res = evaluate_t2i(pipe, a.per_category, a.steps, a.guidance, a.seed, with_def=not a.no_def)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    summary = {k: v for k, v in res.items() if k != "rows"}
    bad = sorted({r["name"] for r in res["rows"] if not (r["colour_ok"] and r["shape_ok"])})
    print(json.dumps(summary), "\nfailed categories:", bad)


if __name__ == "__main__":
    main()
