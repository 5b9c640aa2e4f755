"""Generator throughput and memory: the MosaicFusion generator against plain diffusers, and before/after issue 21.

Variants (each run in a fresh subprocess; rounds alternate A B C A B C so that load drifts cancel in the ratios):

- `after`: the generator as configured (capture and masks on), `generator.batch_size` from `--batch-size` (default:
  the model config's);
- `before`: the behaviour before issue 21: `generator.jitter_levels=null generator.batch_size=1`, in
  `--before-dtype` (default `--dtype`; the toy default was fp32 then, `auto` now);
- `nocapture`: `after` without capture and masks (denoise and decode only): `after` / `nocapture` is the capture cost;
- `plain`: `StableDiffusionPipeline.__call__` making the mosaics' region images (same count: mosaics x N, nominal
  region size, batch size x N images per call, same model, dtype, steps, guidance and region prompts): the cost of
  the mosaic machinery.
- `plain_crops`: as `plain`, but each region image at its own crop's shape (overlap and jitter included: the pixels
  the mosaic diffuses), a batch of mosaics' crops grouped by shape exactly as the generator's buckets, one pipeline
  call per shape: the same denoiser calls as `after`, so `after` / `plain_crops` is the cost of blending, capture,
  masks and the canvas alone.
- `--sweep 1,2,4,8` adds one `after` subprocess timing each of these batch sizes in turn (for picking the default).

Each variant makes `--mosaics` mosaics after a warm-up (the first batch at 2 steps; with `--compile` every batch's
denoising at 2 steps, so that compilation stays out of the timing). Peak memory: CUDA max allocated, else the
subprocess's peak RSS. Benchmarks measure and never assert timings; on a CPU read the ratios, not the seconds.

    python benchmarks/generate.py --model toy --mosaics 20 --dtype auto --before-dtype fp32   # toy default, CPU
    python benchmarks/generate.py --model sd14-random --steps 2 --mosaics 2 # SD 1.4 architecture, random weights
    python benchmarks/generate.py --model sd14-random --dtype bf16 --compile --out gpu.json   # a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {  # --model -> overrides (refine=bilateral: the paper's setting, numpy only: no opencv-contrib needed)
    "tiny": ["generator/model=tiny_random", "generator.mask.refine=bilateral"],
    "toy": ["generator/model=toy"],
    "sd14-random": [
        "generator/model=tiny_random",
        "generator.model.size=sd14",
        "generator.model.region_size=[384,512]",
        "generator.model.overlap=[48,64]",
        "generator.model.attention_resolutions=[32,16,8]",
        "generator.model.num_inference_steps=50",
        "generator.mask.refine=bilateral",
    ],
}
BEFORE = ["generator.jitter_levels=null", "generator.batch_size=1"]  # the generator before issue 21
VARIANTS = ("before", "after", "nocapture", "plain", "plain_crops")


# ------------------------------------------------------------------------------------------------ one subprocess
def compose_config(args):
    from mfexp.compose import compose

    before = args.variant == "before"
    dtype = args.before_dtype if before and args.before_dtype else args.dtype
    overrides = list(MODELS[args.model]) + [f"generator.dtype={dtype}", f"generator.compile={args.compile}"]
    if args.steps is not None:
        overrides.append(f"generator.num_inference_steps={args.steps}")
    if before:
        overrides += BEFORE
    return compose(overrides)


def categories() -> list[dict]:
    from mfexp.toyworld.world import build_categories

    return build_categories()


def peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def time_batches(run, batches, device: str) -> tuple[float, list]:
    """Seconds to run every batch (CUDA synchronised), and the runs' outputs."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    outputs = [run(batch) for batch in batches]
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, outputs


def child(args) -> list[dict]:
    """Time one variant at each batch size of `--child-batch-sizes` (default: the config's), one record each; the
    model is loaded once. The mosaics' plans are the same for every variant and batch size."""
    import torch

    from mfexp.mosaicfusion.attention import AttentionStore, NaiveStore
    from mfexp.mosaicfusion.models import load_pipeline
    from mfexp.mosaicfusion.pipeline import MosaicFusionGenerator

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = compose_config(args)
    gcfg = cfg.generator
    random_weights = device == "cuda" and gcfg.model.path == "tiny_random"
    with torch.device(device) if random_weights else contextlib.nullcontext():  # random init on the GPU: seconds
        pipe = load_pipeline(gcfg.model, gcfg.dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    gen = MosaicFusionGenerator(pipe, gcfg, cfg.synthetic)
    steps = int(gcfg.num_inference_steps)
    warm = copy.copy(gen)  # the same denoiser (compiled or not) at 2 steps: warm-up on the shapes to be timed
    warm.cfg = copy.deepcopy(gcfg)
    warm.cfg.num_inference_steps = min(2, steps)
    if args.variant.startswith("plain") and args.compile:
        pipe.unet = torch.compile(pipe.unet)
    sizes = [int(b) for b in args.child_batch_sizes.split(",")] if args.child_batch_sizes else [int(gcfg.batch_size)]
    count = max(args.mosaics, *sizes)  # at batch size B, max(--mosaics, B) mosaics are timed
    cats = categories()
    mains = [cats[i % len(cats)] for i in range(count)]
    all_plans = [gen.plan(i, mains, cats, args.seed) for i in range(count)]
    plans = all_plans[: args.mosaics]
    n = len(plans[0].prompts)
    h, w = (int(v) for v in gcfg.region_size)

    def plain(prompts, num_steps=steps, shape=(h, w)):
        factor = pipe.vae_scale_factor  # latents passed in: crops of a stride-4 VAE need not be multiples of 8
        gen_ = torch.Generator(device).manual_seed(0)
        latent = (len(prompts), pipe.unet.config.in_channels, shape[0] // factor, shape[1] // factor)
        pipe(
            list(prompts),
            height=-(-shape[0] // 8) * 8,  # only checked: the latents fix the size
            width=-(-shape[1] // 8) * 8,
            num_inference_steps=num_steps,
            guidance_scale=float(gcfg.guidance_scale),
            latents=torch.randn(latent, generator=gen_, device=device, dtype=pipe.unet.dtype),
            output_type="np",
        )

    def plain_crops(group, num_steps=steps):  # one call per region shape of the batch, as the generator's buckets
        by_shape = defaultdict(list)
        for plan in group:
            for reg, prompt in zip(plan.layout.regions, plan.prompts, strict=True):
                by_shape[(reg.height, reg.width)].append(prompt)
        for shape, prompts in by_shape.items():
            plain(prompts, num_steps, shape)

    def nocapture(group, g=gen):
        g.decode(group, g.denoise(group, AttentionStore(g.window)))

    def warm_denoise(group):
        store = AttentionStore(warm.window)
        with warm.family.capture(store):
            warm.denoise(group, store)

    records = []
    for size in sizes:
        batch = 1 if args.variant == "before" else size
        plans = all_plans[: max(args.mosaics, batch)]
        if args.variant == "plain":
            prompts = [p for plan in plans for p in plan.prompts]
            batches = [prompts[i : i + batch * n] for i in range(0, len(prompts), batch * n)]
            run, warm_full, warm_rest = plain, (lambda group: plain(group, warm.cfg.num_inference_steps)), None
        elif args.variant == "plain_crops":
            batches = [plans[i : i + batch] for i in range(0, len(plans), batch)]
            run, warm_full = plain_crops, (lambda group: plain_crops(group, warm.cfg.num_inference_steps))
            warm_rest = warm_full  # with --compile, every batch's shapes
        elif args.variant == "nocapture":
            batches = [plans[i : i + batch] for i in range(0, len(plans), batch)]
            run, warm_full, warm_rest = nocapture, (lambda group: nocapture(group, warm)), warm_denoise
        else:
            batches = [plans[i : i + batch] for i in range(0, len(plans), batch)]
            run, warm_full, warm_rest = gen, warm, warm_denoise
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        warm_full(batches[0])
        if args.compile:  # every shape of the timed run compiled here (plain: the last, smaller batch)
            for group in batches[1:] if warm_rest else batches[-1:]:
                (warm_rest or warm_full)(group)
        seconds, outputs = time_batches(run, batches, device)
        record = {"peak_mb": peak_mb(device)}
        if args.store_bytes and run is gen:  # one mosaic again, into the capture store and a naive keep-all store
            stores = {"capture_store_bytes": AttentionStore(gen.window), "naive_store_bytes": NaiveStore()}
            for key, store in stores.items():
                gen(plans[:1], store)
                record[key] = store.nbytes()
        records.append(
            {
                **record,
                "variant": args.variant,
                "batch_size": batch,
                "mosaics": len(plans),
                "seconds": seconds,
                "kept": sum(r.kept for out in outputs for r in out) if run is gen else None,
                "region_pixels_per_mosaic": (
                    n * h * w
                    if args.variant == "plain"
                    else sum(r.height * r.width for plan in plans for r in plan.layout.regions) / len(plans)
                ),
                "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "canvas": [plans[0].layout.height, plans[0].layout.width],
                "regions_per_mosaic": n,
                "region_size": [h, w],
                "steps": steps,
            }
        )
    return records


# ------------------------------------------------------------------------------------------------ the parent
def run_child(args, variant: str, batch_sizes: str | None) -> list[dict]:
    """One variant's records, from a fresh subprocess (or this process with `--in-process`: dry runs only, its peak
    memory is not the variant's own)."""
    if args.in_process:
        one = copy.copy(args)
        one.variant, one.child_batch_sizes = variant, batch_sizes or (str(args.batch_size) if args.batch_size else None)
        return child(one)
    cmd = [sys.executable, __file__, *args.argv, "--variant", variant]
    if batch_sizes:
        cmd += ["--child-batch-sizes", batch_sizes]
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(args, rounds: list[dict]) -> dict:
    """Per variant: seconds per mosaic over all rounds, peak memory (max); ratios of mosaics/s, per round and over
    all rounds (`plain` counts N region images as one mosaic)."""
    variants = {}
    for name in rounds[0]:
        recs = [rnd[name] for rnd in rounds]
        mosaics = sum(r["mosaics"] for r in recs)
        variants[name] = {
            "batch_size": recs[0]["batch_size"],
            "seconds_per_mosaic": sum(r["seconds"] for r in recs) / mosaics,
            "seconds_per_mosaic_per_round": [r["seconds"] / r["mosaics"] for r in recs],
            "peak_mb": max(r["peak_mb"] for r in recs),
            "kept": recs[0]["kept"],
            "region_pixels_per_mosaic": recs[0]["region_pixels_per_mosaic"],
            **{k: v for k, v in recs[0].items() if k.endswith("_store_bytes")},
        }
    first = next(iter(rounds[0].values()))

    def ratio(a: str, b: str) -> dict | None:  # mosaics/s of a over b = seconds of b over a
        if a not in variants or b not in variants:
            return None
        per_round = [rnd[b]["seconds"] / rnd[b]["mosaics"] / (rnd[a]["seconds"] / rnd[a]["mosaics"]) for rnd in rounds]
        total = variants[b]["seconds_per_mosaic"] / variants[a]["seconds_per_mosaic"]
        return {"value": round(total, 3), "per_round": [round(r, 3) for r in per_round]}

    ratios = {
        "after_vs_before": ratio("after", "before"),
        "generator_vs_plain": ratio("after", "plain"),
        "generator_vs_plain_crops": ratio("after", "plain_crops"),
        "nocapture_vs_after": ratio("nocapture", "after"),  # > 1: what capture and masks cost
    }
    ratios = {k: v for k, v in ratios.items() if v is not None}
    return {**header(args, first), "rounds": len(rounds), "variants": variants, "ratios": ratios}


def header(args, record: dict) -> dict:
    """What was measured: model, device, sizes, settings (from a child's record)."""
    keys = ("device", "steps", "canvas", "regions_per_mosaic", "region_size")
    return {
        "model": args.model,
        **{k: record[k] for k in keys},
        "dtype": args.dtype,
        "before_dtype": args.before_dtype or args.dtype,
        "compile": args.compile,
        "mosaics_per_variant": args.mosaics,
        "threads": args.threads,
    }


def sweep(args) -> tuple[dict, dict]:
    """`after` at each `--sweep` batch size, in one subprocess: {batch size: mosaics/s, peak memory, mosaics},
    and the first record. On a CPU the peak RSS is the process's peak so far (it only grows)."""
    recs = run_child(args, "after", args.sweep)
    out = {
        str(r["batch_size"]): {
            "mosaics_per_second": r["mosaics"] / r["seconds"],
            "peak_mb": r["peak_mb"],
            "mosaics": r["mosaics"],
        }
        for r in recs
    }
    return out, recs[0]


def table(report: dict) -> str:
    gpu = report["device"] != "cpu"  # absolute times only on a GPU; on a CPU, relative to the first variant
    ref = next(iter(report["variants"].values()), {"seconds_per_mosaic": 1.0})["seconds_per_mosaic"]
    head = "s/mosaic" if gpu else "time (rel.)"
    lines = [f"{'variant':<12} {'batch':>5} {head:>11} {'peak MB':>9}"]
    for name, v in report["variants"].items():
        t = v["seconds_per_mosaic"] if gpu else v["seconds_per_mosaic"] / ref
        lines.append(f"{name:<12} {v['batch_size']:>5} {t:>11.3f} {v['peak_mb']:>9.0f}")
    for name, r in report["ratios"].items():
        lines.append(f"{name:<25} {r['value']:>6.3f}x  (rounds: {', '.join(f'{x:.3f}' for x in r['per_round'])})")
    sweep = report.get("sweep", {})
    first = next(iter(sweep.values()), {"mosaics_per_second": 1.0})["mosaics_per_second"]
    for b, s in sweep.items():
        rate = s["mosaics_per_second"]
        rate = f"{rate:.3f} mosaics/s" if gpu else f"throughput {rate / first:.2f}x batch {next(iter(sweep))}"
        lines.append(f"sweep batch {b:>2}: {rate}, peak {s['peak_mb']:.0f} MB")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="toy")
    p.add_argument("--mosaics", type=int, default=40, help="mosaics per variant and round")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's; toy 25, sd14-random 50)")
    p.add_argument("--batch-size", type=int, help="generator.batch_size of after/nocapture/plain (default: config)")
    p.add_argument("--variants", default="before,after,plain", help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--sweep", help="batch sizes for a sweep of `after`, e.g. 1,2,4,8")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of all variants")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16", "auto"], default="fp32")
    p.add_argument(
        "--before-dtype",
        choices=["fp32", "fp16", "bf16"],
        help="dtype of `before` (default: --dtype); the toy default before issue 21 ran fp32",
    )
    p.add_argument("--compile", action="store_true", help="generator.compile=true (and a compiled UNet for plain)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU; 1: robust on a shared machine)")
    p.add_argument("--in-process", action="store_true", help="no subprocesses (dry runs: peak memory is shared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store-bytes", action="store_true", help="capture store vs keep-every-map store, one mosaic")
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--child-batch-sizes", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for v in args.variants.split(","):
        if v and v not in VARIANTS:
            p.error(f"--variants: unknown variant {v!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.variant:
        args.child_batch_sizes = args.child_batch_sizes or (str(args.batch_size) if args.batch_size else None)
        print(json.dumps(child(args)))
        return
    names = [v for v in args.variants.split(",") if v]
    rounds = []
    for r in range(args.rounds):
        rounds.append({name: run_child(args, name, None)[0] for name in names})
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    report = summarise(args, rounds) if names else {}
    if args.sweep:
        results, first = sweep(args)
        report = report or {**header(args, first), "variants": {}, "ratios": {}}
        report["sweep"] = results
    print(table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
