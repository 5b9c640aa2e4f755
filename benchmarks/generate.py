"""MosaicFusion generator vs plain diffusers, same model, canvas pixels and steps.

Reports (as ratios measured in the same run): throughput of the mfexp generator with attention capture on vs a
plain `StableDiffusionPipeline` call at the canvas size; peak memory of each (CUDA: max allocated; CPU: peak RSS
growth of a fresh process); and the capture store's memory vs a naive store that keeps every cross-attention map of
every step (the public code's way).

    python benchmarks/generate.py                                # tiny random model on CPU
    python benchmarks/generate.py --model toy --steps 25         # the shipped toy model
    python benchmarks/generate.py --model sd14-random --steps 50 # full SD 1.4 architecture, random weights (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "tiny": ["generator/model=tiny_random"],
    "toy": ["generator/model=toy"],
    "sd14-random": [
        "generator/model=tiny_random",
        "generator.model.size=sd14",
        "generator.model.region_size=[384,512]",
        "generator.model.overlap=[48,64]",
        "generator.model.attention_resolutions=[32,16,8]",
    ],
}


def config(args):
    from mfexp.compose import compose

    return compose(
        MODELS[args.model]
        + [
            f"generator.num_objects={args.num_objects}",
            "generator.jitter=[1.0,1.0]",
            f"generator.num_inference_steps={args.steps}",
            f"generator.dtype={args.dtype}",
        ]
    )


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> dict:
    import torch

    from mfexp.mosaicfusion.attention import AttentionStore, NaiveStore
    from mfexp.mosaicfusion.models import load_pipeline
    from mfexp.mosaicfusion.pipeline import MosaicFusionGenerator

    torch.set_num_threads(args.threads)
    cfg = config(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(cfg.generator.model, cfg.generator.dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    gen = MosaicFusionGenerator(pipe, cfg.generator, cfg.synthetic)
    cats = [
        {"id": i, "name": n, "def": "", "frequency": "r"}
        for i, n in enumerate(["red circle", "blue square", "green star", "black cross"], 1)
    ]
    plan = gen.plan(0, cats, cats, 0)
    h, w = plan.layout.height, plan.layout.width

    def plain():
        gen_ = torch.Generator(device).manual_seed(0)
        pipe(
            plan.prompts[0],
            height=h,
            width=w,
            num_inference_steps=args.steps,
            guidance_scale=float(cfg.generator.guidance_scale),
            generator=gen_,
            output_type="np",
        )

    def mosaic(store=None):
        gen([gen.plan(0, cats, cats, 0)], store)

    run = {"plain": plain, "mosaic": mosaic}[args.variant]
    run()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = rss_mb()
    start = time.perf_counter()
    for _ in range(args.repeats):
        run()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.repeats
    out = {
        "variant": args.variant,
        "seconds_per_image": seconds,
        "canvas": [h, w],
        "device": device,
        "peak_mb": (torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else rss_mb(),
        "rss_growth_mb": rss_mb() - base_rss,
    }
    if args.variant == "mosaic":
        store, naive = AttentionStore(gen.window), NaiveStore()
        mosaic(store)
        mosaic(naive)
        out["capture_bytes"], out["naive_bytes"] = store.nbytes(), naive.nbytes()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="tiny")
    p.add_argument("--num-objects", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", choices=["plain", "mosaic"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    results = {}
    for variant in ("plain", "mosaic"):  # each in a fresh process, so peak memory is its own
        cmd = [sys.executable, __file__, "--variant", variant] + sys.argv[1:]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    plain, mosaic = results["plain"], results["mosaic"]
    report = {
        "model": args.model,
        "device": mosaic["device"],
        "canvas": mosaic["canvas"],
        "steps": args.steps,
        "num_objects": args.num_objects,
        "plain_seconds_per_image": round(plain["seconds_per_image"], 4),
        "mosaic_seconds_per_image": round(mosaic["seconds_per_image"], 4),
        "throughput_ratio_mosaic_vs_plain": round(plain["seconds_per_image"] / mosaic["seconds_per_image"], 3),
        "peak_memory_ratio_mosaic_vs_plain": round(mosaic["peak_mb"] / plain["peak_mb"], 3),
        "peak_mb": {"plain": round(plain["peak_mb"], 1), "mosaic": round(mosaic["peak_mb"], 1)},
        "capture_store_bytes": mosaic["capture_bytes"],
        "naive_store_bytes": mosaic["naive_bytes"],
        "capture_memory_reduction_x": round(mosaic["naive_bytes"] / max(mosaic["capture_bytes"], 1), 1),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
