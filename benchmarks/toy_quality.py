"""Quality of the toy text-to-image model under MosaicFusion, measured.

(a) class fidelity: a small CNN trained on real toy-world crops (rendered by the world itself; some blurred, crop box
    jittered) names the category of generated single objects (N=1 mosaics, one per category incl. novel ones), each
    cropped by the reference annotator's mask; target >= 90 %. Reported with it: the classifier's accuracy on held-out
    real crops, and on real renders passed through the model's VAE and cropped the same way as generated samples --
    the most (a) can give for a model with this autoencoder.
(b) mask quality: mean IoU of MosaicFusion's cross-attention masks (the whole chain: aggregate, Otsu, refine,
    component filter) against the toy world's reference annotator on the generated pixels (objects are saturated,
    backgrounds grey-ish, so the reference is close to exact), for N = 1, 2, 4; target >= 0.75.
(c) seconds per mosaic on this machine.

    python benchmarks/toy_quality.py [--mosaics 48] [--per-category 1] [--steps 25] [--guidance 2 3 4]
                                     [--model-path DIR] [--n 1 2 4] [--out results.json]

``--model-path`` evaluates another exported toy pipeline (e.g. the output of ``python -m mfexp.toyworld.train_t2i``)
instead of the shipped weights. ``--per-category K`` draws K single objects per category for (a) (one sample per
category gives a +-5-point spread). Several ``--guidance`` values measure (a) for each with the same classifier and
seeds; (b) and (c) use the first.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mfexp.toyworld.world import (build_categories, classify_colour, classify_shape,  # noqa: E402
                                  render_single_object_image, segment_saturated, split_name)

CROP = 32


def crop_object(rgb: np.ndarray, mask: np.ndarray, pad: float = 0.15, shift=(0.0, 0.0)) -> np.ndarray:
    """Square crop around the mask's box, ``pad`` larger than its long side, moved by ``shift`` x its size."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    s = int(max(y1 - y0, x1 - x0) * (1 + pad))
    cy, cx = (y0 + y1) // 2 + int(round(shift[0] * s)), (x0 + x1) // 2 + int(round(shift[1] * s))
    padded = cv2.copyMakeBorder(rgb, s, s, s, s, cv2.BORDER_REFLECT)
    patch = padded[cy - s // 2 + s: cy - s // 2 + 2 * s, cx - s // 2 + s: cx - s // 2 + 2 * s]
    return cv2.resize(patch, (CROP, CROP), interpolation=cv2.INTER_AREA)


def to_tensor(crops) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1


def classifier(num_classes: int) -> torch.nn.Module:
    def block(i, o):
        return [torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.BatchNorm2d(o), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
    return torch.nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), torch.nn.Flatten(),
                               torch.nn.Linear(128 * 4 * 4, 256), torch.nn.ReLU(), torch.nn.Linear(256, num_classes))


def real_crops(cats, per_category: int, seed: int, size: int = 64, augment: bool = False):
    """Crops of rendered single objects. ``augment`` blurs some renders and jitters the crop box (pad, offset), so
    the classifier judges the category and not the edge sharpness or the exact box, which differ on decoded images
    cropped by the reference annotator's mask."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, c in enumerate(cats):
        for _ in range(per_category):
            rgb, mask = render_single_object_image(c, size, rng)
            pad, shift = 0.15, (0.0, 0.0)
            if augment:
                if rng.random() < 0.7:
                    rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.3, 1.2))
                pad, shift = rng.uniform(0.0, 0.4), rng.uniform(-0.08, 0.08, 2)
            xs.append(crop_object(rgb, mask, pad, shift))
            ys.append(k)
    return to_tensor(xs), torch.tensor(ys)


def train_classifier(cats, per_category: int, epochs: int, seed: int = 0, augment: bool = True):
    torch.manual_seed(seed)
    x, y = real_crops(cats, per_category, seed, augment=augment)
    xv, yv = real_crops(cats, 10, seed + 1)
    net = classifier(len(cats))
    opt = torch.optim.AdamW(net.parameters(), 2e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        net.train()
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(xv).argmax(1) == yv).float().mean().item()
    return net, acc


def vae_roundtrip_accuracy(net, vae, cats, per_category: int, seed: int, size: int = 64) -> float:
    """The ceiling of (a) for a model with this autoencoder: real renders encoded and decoded by the VAE, cropped by
    the reference annotator's mask as generated samples are, then classified."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k, c in enumerate(cats):
        for _ in range(per_category):
            images.append(render_single_object_image(c, size, rng)[0])
            labels.append(k)
    decoded = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            x = to_tensor(images[i:i + 64]).to(vae.device, vae.dtype)
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            decoded += list(((rec.float() + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return float((classify_by_reference(net, decoded)[0] == np.array(labels)).mean())


def classify_by_reference(net, images) -> tuple[np.ndarray, list]:
    """The classifier's category for each image's object, cropped by the reference annotator's mask (-1 where the
    annotator finds no object), and those masks."""
    refs = [segment_saturated(im) for im in images]
    found = [i for i, ref in enumerate(refs) if ref.sum() >= 4]
    pred = np.full(len(images), -1)
    if found:
        with torch.no_grad():
            pred[found] = net(to_tensor([crop_object(images[i], refs[i]) for i in found])).argmax(1).numpy()
    return pred, refs


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def compose(overrides):
    from hydra import compose as hydra_compose, initialize_config_dir
    import mfexp.__main__  # noqa: F401
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def run_mosaics(pipe, cats, n: int, count: int, steps: int, seed: int, extra=()):
    from mfexp.mosaicfusion.pipeline import MosaicFusionGenerator
    cfg = compose(["generator/model=toy", f"generator.num_objects={n}", f"generator.num_inference_steps={steps}",
                   "generator.images_per_category=1", *extra])
    gen = MosaicFusionGenerator(pipe, cfg.generator)
    results, start = [], time.perf_counter()
    for i in range(count):
        results += gen([gen.plan(i % len(cats), cats, cats, seed + i)])
    return results, (time.perf_counter() - start) / count


def single_object_fidelity(net, cats, singles) -> dict:
    """Share of generated single objects the real-crop classifier names right (class fidelity), and the reference
    annotator's colour and shape verdicts, overall and per shape."""
    labels = np.array([cats.index(res.plan.categories[0]) for res in singles])
    pred, refs = classify_by_reference(net, [res.image for res in singles])
    right = pred == labels
    colour_ok = shape_ok = 0
    by_shape: dict = {}
    for res, ref, r in zip(singles, refs, right):
        colour, shape = split_name(res.plan.categories[0]["name"])
        if ref.sum() >= 4:    # the reference annotator, per attribute
            colour_ok += classify_colour(res.image, ref) == colour
            shape_ok += classify_shape(ref)[0] == shape
        by_shape.setdefault(shape, []).append(r)
    correct = int(right.sum())
    n = max(1, len(singles))
    return {"samples": len(singles), "class_fidelity": round(correct / n, 4), "colour_correct": round(colour_ok / n, 4),
            "shape_correct": round(shape_ok / n, 4),
            "class_fidelity_by_shape": {k: round(float(np.mean(v)), 3) for k, v in sorted(by_shape.items())}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mosaics", type=int, default=48, help="mosaics per N (categories cycle)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the toy model's)")
    p.add_argument("--per-category", type=int, default=1, help="single objects per category for (a)")
    p.add_argument("--guidance", type=float, nargs="+", default=None, help="guidance scale(s) (default: the model's)")
    p.add_argument("--epochs", type=int, default=20, help="classifier epochs")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--model-path", type=Path, help="toy pipeline folder (default: the shipped weights)")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4], help="objects per mosaic to measure (1 always runs)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(2)
    from mfexp.mosaicfusion.models import load_pipeline
    cats = build_categories()
    for c in cats:
        c["frequency"] = "r"
    model = [f"generator.model.path={args.model_path.resolve()}"] if args.model_path else []
    cfg = compose(["generator/model=toy", *model])
    steps = args.steps or int(cfg.generator.num_inference_steps)
    pipe = load_pipeline(cfg.generator.model)
    net, real_acc = train_classifier(cats, 120, args.epochs)
    report = {"model": str(args.model_path or "shipped"), "classifier_accuracy_on_real_crops": round(real_acc, 4),
              "classifier_accuracy_on_vae_roundtrip": round(vae_roundtrip_accuracy(net, pipe.vae, cats, 3, args.seed + 1), 4),
              "steps": steps}
    print(f"classifier on real crops {real_acc:.4f}, on VAE round trips {report['classifier_accuracy_on_vae_roundtrip']}",
          file=sys.stderr, flush=True)

    # (a) fidelity on generated single objects (N = 1), --per-category per category and more while --mosaics allows
    guidances = args.guidance or [float(cfg.generator.guidance_scale)]
    report["fidelity"], runs = {}, {}
    for g in guidances:
        runs[g] = run_mosaics(pipe, cats, 1, max(args.mosaics, args.per_category * len(cats)), steps, args.seed,
                              [f"generator.guidance_scale={g}"])
        report["fidelity"][str(g)] = single_object_fidelity(net, cats, runs[g][0])
        print(f"guidance {g}: {json.dumps(report['fidelity'][str(g)])}", file=sys.stderr, flush=True)
    singles, sec1 = runs[guidances[0]]
    report.update({k: report["fidelity"][str(guidances[0])][k] for k in ("class_fidelity", "colour_correct", "shape_correct")})
    report["guidance"] = guidances[0]

    # (b) mask IoU vs the reference annotator, (c) seconds per mosaic, for N = 1, 2, 4
    for n in sorted({1, *args.n}):
        results, sec = (singles, sec1) if n == 1 else run_mosaics(pipe, cats, n, args.mosaics, steps, args.seed,
                                                                  [f"generator.guidance_scale={guidances[0]}"])
        kept_ious, regions = [], 0
        for res in results:
            regions += len(res.plan.layout.regions)
            if not res.kept:
                continue
            for reg, m in zip(res.plan.layout.regions, res.masks):
                crop = res.image[reg.top:reg.bottom, reg.left:reg.right]
                kept_ious.append(iou(m[reg.top:reg.bottom, reg.left:reg.right], segment_saturated(crop)))
        report[f"N{n}"] = {"mosaics": len(results), "kept": sum(r.kept for r in results),
                           "mask_mIoU_kept": round(float(np.mean(kept_ious)), 4) if kept_ious else None,
                           "regions_kept": len(kept_ious), "seconds_per_mosaic": round(sec, 3)}
        skipped = [r.reason for r in results if not r.kept]
        report[f"N{n}"]["skip_examples"] = skipped[:3]
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
