"""Quality of the toy text-to-image model under MosaicFusion, measured.

(a) class fidelity: a small CNN trained on real toy-world crops (rendered by the world itself; some blurred, crop box
    jittered) names the category of generated single objects (N=1 mosaics, one per category incl. novel ones), each
    cropped by the reference annotator's mask; target >= 90 %. Reported with it: the classifier's accuracy on held-out
    real crops, and on real renders passed through the model's VAE and cropped the same way as generated samples --
    the most (a) can give for a model with this autoencoder; and on 2 x 2 canvases of real renders' latents decoded
    as one canvas vs one tile at a time (what generator.decode=canvas / regions do to a mosaic).
(b) mask quality: mean IoU of MosaicFusion's cross-attention masks (the whole chain: aggregate, Otsu, refine,
    component filter) against the toy world's reference annotator on the generated pixels (objects are saturated,
    backgrounds grey-ish, so the reference is close to exact), for N = 1, 2, 4; target >= 0.75.
(c) seconds per mosaic on this machine.
(d) class fidelity inside mosaics (what the detector is fed): every region of every kept mosaic of (b), N = 1 included,
    classified by the same classifier, cropped by the region's kept MosaicFusion mask (the instance the detector gets)
    and, as a check of the crop, by the reference annotator inside the region. Reported per N, per position (corner
    or side), per region size, per neighbour colour, and as a colour confusion table (requested -> classified).

    python benchmarks/toy_quality.py [--mosaics 48] [--per-category 1] [--steps 25] [--guidance 2 3 4]
                                     [--model toy|toy_mmdit] [--model-path DIR] [--n 1 2 4] [--out results.json]
                                     [--pool all|dataset] [--set generator.KEY=VALUE ...] [--classifier FILE]
                                     [--misclassified grid.png]

``--model toy_mmdit`` measures the toy MM-DiT (SD3 family) instead of the toy UNet. ``--model-path`` evaluates another
exported toy pipeline (e.g. the output of ``python -m mfexp.toyworld.train_t2i``, or a toy MM-DiT checkpoint exported
with ``python -m mfexp.toyworld.toy_mmdit CKPT DIR``) instead of the shipped weights.
``--per-category K`` draws K single objects per category for (a) (one sample per
category gives a +-5-point spread). Several ``--guidance`` values measure (a) for each with the same classifier and
seeds; (b), (c) and (d) use the first. ``--pool dataset`` draws the mosaics' categories as the generate stage does
(main: the dataset's rare ones, the others from r, c, f of its train annotations); ``all`` (default) cycles the main
category over all 48 and draws the others uniformly from all 48, so every colour is seen equally often.
``--set`` passes generator overrides to every mosaic run (e.g. ``generator.overlap=[0,0]``, ``generator.blend_sigma=
0.2``); ``--classifier FILE`` keeps the trained classifier (loaded when FILE exists, written otherwise);
``--misclassified`` writes a grid of the wrongly named regions of (d) (region crop, requested -> classified).
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

from mfexp.compose import compose  # noqa: E402
from mfexp.fileio import atomic_write_json  # noqa: E402
from mfexp.toyworld.world import (  # noqa: E402
    build_categories,
    classify_colour,
    classify_shape,
    render_single_object_image,
    segment_saturated,
    split_name,
)

CROP = 32


def crop_object(rgb: np.ndarray, mask: np.ndarray, pad: float = 0.15, shift=(0.0, 0.0)) -> np.ndarray:
    """Square crop around the mask's box, ``pad`` larger than its long side, moved by ``shift`` x its size."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    s = int(max(y1 - y0, x1 - x0) * (1 + pad))
    cy, cx = (y0 + y1) // 2 + int(round(shift[0] * s)), (x0 + x1) // 2 + int(round(shift[1] * s))
    padded = cv2.copyMakeBorder(rgb, s, s, s, s, cv2.BORDER_REFLECT)
    patch = padded[cy - s // 2 + s : cy - s // 2 + 2 * s, cx - s // 2 + s : cx - s // 2 + 2 * s]
    return cv2.resize(patch, (CROP, CROP), interpolation=cv2.INTER_AREA)


def to_tensor(crops) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1


def classifier(num_classes: int) -> torch.nn.Module:
    def block(i, o):
        return [torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.BatchNorm2d(o), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]

    return torch.nn.Sequential(
        *block(3, 32),
        *block(32, 64),
        *block(64, 128),
        torch.nn.Flatten(),
        torch.nn.Linear(128 * 4 * 4, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, num_classes),
    )


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
            idx = perm[i : i + 128]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(xv).argmax(1) == yv).float().mean().item()
    return net, acc


def kept_classifier(path: Path | None, cats, epochs: int = 20):
    """(classifier, accuracy on real crops): loaded from `path` when it exists, else trained (and written there)."""
    if path and path.exists():
        state = torch.load(path, weights_only=True)
        net = classifier(len(cats))
        net.load_state_dict(state["net"])
        return net.eval(), state["accuracy"]
    net, accuracy = train_classifier(cats, 120, epochs)
    if path:
        torch.save({"net": net.state_dict(), "accuracy": accuracy}, path)
    return net, accuracy


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
            x = to_tensor(images[i : i + 64]).to(vae.device, vae.dtype)
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            decoded += list(((rec.float() + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return float((classify_by_reference(net, decoded)[0] == np.array(labels)).mean())


def vae_canvas_roundtrip(net, vae, cats, count: int, seed: int, size: int = 64) -> dict:
    """Real renders encoded one at a time, their latents tiled 2 x 2 into one canvas latent, then decoded (i) as one
    canvas and (ii) one latent tile at a time (the plain VAE round trip); each tile classified by the reference
    annotator's crop. (i) is what generator.decode=canvas does to a mosaic, (ii) generator.decode=regions without
    overlap."""
    rng = np.random.default_rng(seed)
    labels, out = [], {"canvas": [], "tiles": []}
    t = size // 2 ** (len(vae.config.block_out_channels) - 1)  # latent tile size
    scale = lambda x: ((x.clamp(-1, 1)[0].float() + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    with torch.no_grad():
        for _ in range(count):
            ks = rng.integers(len(cats), size=4)
            tiles = [render_single_object_image(cats[k], size, rng)[0] for k in ks]
            lat = vae.encode(to_tensor(tiles).to(vae.device, vae.dtype)).latent_dist.mean
            lat = torch.cat([torch.cat([lat[0:1], lat[1:2]], 3), torch.cat([lat[2:3], lat[3:4]], 3)], 2)
            whole = scale(vae.decode(lat).sample)
            out["canvas"] += [whole[y : y + size, x : x + size] for y in (0, size) for x in (0, size)]
            out["tiles"] += [scale(vae.decode(lat[:, :, y : y + t, x : x + t]).sample) for y in (0, t) for x in (0, t)]
            labels += list(ks)
    labels = np.array(labels)
    colour = lambda k: split_name(cats[k]["name"])[0]
    report = {}
    for key, images in out.items():
        pred = classify_by_reference(net, images)[0]
        report[f"decoded_{key}"] = {
            "accuracy": round(float((pred == labels).mean()), 4),
            "colour": round(float(np.mean([p >= 0 and colour(p) == colour(k) for p, k in zip(pred, labels)])), 4),
        }
    return report


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


def run_mosaics(pipe, cats, n: int, count: int, steps: int, seed: int, extra=(), mixed=None, model="toy"):
    """``count`` mosaics through the generate stage's own generator (plan + diffuse + masks), main category cycling
    over ``cats``, the others drawn from ``mixed`` (default: ``cats``); seeds ``seed + i``; ``model`` is the
    generator/model config of ``pipe``."""
    from mfexp.mosaicfusion.pipeline import MosaicFusionGenerator

    cfg = compose(
        [
            f"generator/model={model}",
            f"generator.num_objects={n}",
            f"generator.num_inference_steps={steps}",
            "synthetic.images_per_category=1",
            *extra,
        ]
    )
    gen = MosaicFusionGenerator(pipe, cfg.generator, cfg.synthetic)
    results, start = [], time.perf_counter()
    for i in range(count):
        results += gen([gen.plan(i % len(cats), cats, mixed or cats, seed + i)])
    return results, (time.perf_counter() - start) / count


def grid_of(layout) -> tuple[int, int]:
    return len({r.top for r in layout.regions}), len({r.left for r in layout.regions})


POSITIONS = {
    (1, 1): ["single"],
    (1, 2): ["left", "right"],
    (2, 1): ["top", "bottom"],
    (2, 2): ["top-left", "top-right", "bottom-left", "bottom-right"],
}


def position_name(rows: int, cols: int, r: int) -> str:
    names = POSITIONS.get((rows, cols))
    return names[r] if names else f"row{r // cols}-col{r % cols}"


def edge_neighbours(rows: int, cols: int, r: int) -> list[int]:
    y, x = divmod(r, cols)
    return [
        yy * cols + xx
        for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1))
        if 0 <= yy < rows and 0 <= xx < cols
    ]


def region_records(net, cats, results) -> list[dict]:
    """One record per region of every kept mosaic (``mosaic``: its place in ``results``): the requested category,
    the classifier's category on a crop by
    the region's kept mask (``pred``) and by the reference annotator inside the region (``pred_ref``), position,
    size and the requested categories of its edge neighbours."""
    names = [c["name"] for c in cats]
    recs, crops, ref_crops = [], [], []
    for mosaic, res in enumerate(results):
        if not res.kept:
            continue
        rows, cols = grid_of(res.plan.layout)
        for r, (reg, m) in enumerate(zip(res.plan.layout.regions, res.masks)):
            ref = np.zeros_like(m)
            ref[reg.top : reg.bottom, reg.left : reg.right] = segment_saturated(
                res.image[reg.top : reg.bottom, reg.left : reg.right]
            )
            colour, shape = split_name(res.plan.categories[r]["name"])
            recs.append(
                {
                    "mosaic": mosaic,
                    "seed": res.plan.seed,
                    "n": len(res.plan.layout.regions),
                    "region": r,
                    "position": position_name(rows, cols, r),
                    "requested": res.plan.categories[r]["name"],
                    "colour": colour,
                    "shape": shape,
                    "size": [reg.height, reg.width],
                    "neighbours": [res.plan.categories[k]["name"] for k in edge_neighbours(rows, cols, r)],
                    "ref_colour": classify_colour(res.image, m) if m.sum() >= 4 else None,
                    "_crop": res.image[reg.top : reg.bottom, reg.left : reg.right],
                }
            )
            crops.append(crop_object(res.image, m))
            ref_crops.append(crop_object(res.image, ref) if ref.sum() >= 4 else None)
    if recs:
        with torch.no_grad():
            pred = net(to_tensor(crops)).argmax(1).numpy()
            found = [i for i, c in enumerate(ref_crops) if c is not None]
            pred_ref = np.full(len(recs), -1)
            if found:
                pred_ref[found] = net(to_tensor([ref_crops[i] for i in found])).argmax(1).numpy()
        for rec, p, q in zip(recs, pred, pred_ref):
            rec["pred"], rec["pred_ref"] = names[p], (names[q] if q >= 0 else None)
    return recs


def _rate(recs, key="pred") -> dict:
    n = len(recs)
    if not n:
        return {"regions": 0}
    right = sum(r[key] == r["requested"] for r in recs)
    colour = sum(r[key] is not None and split_name(r[key])[0] == r["colour"] for r in recs)
    shape = sum(r[key] is not None and split_name(r[key])[1] == r["shape"] for r in recs)
    return {"regions": n, "fidelity": round(right / n, 4), "colour": round(colour / n, 4), "shape": round(shape / n, 4)}


def size_bucket(h: int, w: int, native) -> str:
    area = h * w / (native[0] * native[1])
    aspect = w / h
    a = "small" if area < 0.85 else "large" if area > 1.15 else "native"
    s = "wide" if aspect > 1.2 else "tall" if aspect < 1 / 1.2 else "square"
    return f"{a}-{s}"


def summarise_regions(recs, native=(64, 64)) -> dict:
    """Fidelity of the kept regions: overall (mask crop, reference crop), per position, per region size, per
    neighbour colour, colour confusions, and how many colour errors took a neighbour's colour."""
    from mfexp.toyworld.world import COLOURS

    out = {**_rate(recs), "fidelity_reference_crop": _rate(recs, "pred_ref").get("fidelity")}
    if not recs:
        return out
    group = lambda key: {k: _rate([r for r in recs if key(r) == k]) for k in sorted({key(r) for r in recs})}
    out["by_position"] = group(lambda r: r["position"])
    out["by_size"] = group(lambda r: size_bucket(*r["size"], native))
    out["by_colour"] = group(lambda r: r["colour"])
    out["by_shape"] = group(lambda r: r["shape"])
    if any(r["neighbours"] for r in recs):
        out["by_neighbour_colour"] = {
            c: _rate([r for r in recs if any(split_name(x)[0] == c for x in r["neighbours"])]) for c in COLOURS
        }
        out["same_colour_neighbour"] = {
            "yes": _rate([r for r in recs if any(split_name(x)[0] == r["colour"] for x in r["neighbours"])]),
            "no": _rate([r for r in recs if not any(split_name(x)[0] == r["colour"] for x in r["neighbours"])]),
        }
        wrong = [r for r in recs if split_name(r["pred"])[0] != r["colour"]]
        took = sum(split_name(r["pred"])[0] in {split_name(x)[0] for x in r["neighbours"]} for r in wrong)
        # chance: a wrong colour drawn uniformly from the 5 others lands on a neighbour's (other) colour
        chance = (
            np.mean(
                [len({split_name(x)[0] for x in r["neighbours"]} - {r["colour"]}) / (len(COLOURS) - 1) for r in wrong]
            )
            if wrong
            else 0.0
        )
        out["colour_errors_taking_a_neighbours_colour"] = {
            "errors": len(wrong),
            "took": int(took),
            "chance": round(float(chance) * len(wrong), 1),
        }
    conf = {c: {} for c in COLOURS}
    for r in recs:
        got = split_name(r["pred"])[0]
        conf[r["colour"]][got] = conf[r["colour"]].get(got, 0) + 1
    out["colour_confusion"] = {c: dict(sorted(v.items())) for c, v in conf.items() if v}
    return out


def misclassified_grid(recs, path: Path, tile: int = 96, per_row: int = 10) -> int:
    """A PNG grid of the wrongly named regions: the region's pixels, 'requested' above 'classified'."""
    wrong = [r for r in recs if r["pred"] != r["requested"]]
    if not wrong:
        return 0
    tiles = []
    for r in wrong:
        im = cv2.resize(r["_crop"], (tile, tile), interpolation=cv2.INTER_NEAREST)
        im = cv2.copyMakeBorder(im, 24, 0, 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        for y, text in ((10, r["requested"]), (21, "-> " + r["pred"])):
            cv2.putText(im, text, (2, y), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(im)
    while len(tiles) % per_row:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i : i + per_row], 1) for i in range(0, len(tiles), per_row)]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    return len(wrong)


def single_object_fidelity(net, cats, singles) -> dict:
    """Share of generated single objects the real-crop classifier names right (class fidelity), and the reference
    annotator's colour and shape verdicts, overall and per shape."""
    names = [c["name"] for c in cats]
    labels = np.array([names.index(res.plan.categories[0]["name"]) for res in singles])
    pred, refs = classify_by_reference(net, [res.image for res in singles])
    right = pred == labels
    colour_ok = shape_ok = 0
    by_shape: dict = {}
    for res, ref, r in zip(singles, refs, right):
        colour, shape = split_name(res.plan.categories[0]["name"])
        if ref.sum() >= 4:  # the reference annotator, per attribute
            colour_ok += classify_colour(res.image, ref) == colour
            shape_ok += classify_shape(ref)[0] == shape
        by_shape.setdefault(shape, []).append(r)
    correct = int(right.sum())
    n = max(1, len(singles))
    return {
        "samples": len(singles),
        "class_fidelity": round(correct / n, 4),
        "colour_correct": round(colour_ok / n, 4),
        "shape_correct": round(shape_ok / n, 4),
        "class_fidelity_by_shape": {k: round(float(np.mean(v)), 3) for k, v in sorted(by_shape.items())},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mosaics", type=int, default=48, help="mosaics per N (categories cycle)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the toy model's)")
    p.add_argument("--per-category", type=int, default=1, help="single objects per category for (a)")
    p.add_argument("--guidance", type=float, nargs="+", default=None, help="guidance scale(s) (default: the model's)")
    p.add_argument("--epochs", type=int, default=20, help="classifier epochs")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--model", default="toy", help="generator/model config: toy (the toy UNet) or toy_mmdit")
    p.add_argument("--model-path", type=Path, help="toy pipeline folder (default: the shipped weights)")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4], help="objects per mosaic to measure (1 always runs)")
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--pool",
        choices=["all", "dataset"],
        default="all",
        help="mosaic categories: all 48 uniformly, or as the generate stage draws them",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="generator overrides for every mosaic run, e.g. generator.blend_sigma=0.2",
    )
    p.add_argument("--classifier", type=Path, help="classifier state file: loaded if it exists, else written")
    p.add_argument("--misclassified", type=Path, help="PNG grid of the wrongly named mosaic regions of (d)")
    args = p.parse_args()
    if any(
        o.lstrip("+~").startswith(("generator.num_objects=", "generator.num_inference_steps=")) for o in args.overrides
    ):
        p.error("--n sets generator.num_objects and --steps generator.num_inference_steps: leave them out of --set")
    import os

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(2)
    from mfexp.mosaicfusion.models import load_pipeline, set_scheduler

    cats = build_categories()
    for c in cats:
        c["frequency"] = "r"
    model = [f"generator.model.path={args.model_path.resolve()}"] if args.model_path else []
    cfg = compose([f"generator/model={args.model}", *model, *args.overrides])
    steps = args.steps or int(cfg.generator.num_inference_steps)
    pipe = set_scheduler(load_pipeline(cfg.generator.model, cfg.generator.dtype), cfg.generator.scheduler)
    net, real_acc = kept_classifier(args.classifier, cats, args.epochs)
    main_cats, mixed_cats = cats, None
    if args.pool == "dataset":
        from mfexp.data import prepare_dataset
        from mfexp.lvis import load_categories, select_categories

        full = compose([f"generator/model={args.model}", *model])
        pool = load_categories(prepare_dataset(full.dataset)["train_json"])
        main_cats = select_categories(pool, full.synthetic.main_frequency, "main")
        mixed_cats = select_categories(pool, full.synthetic.mixed_frequency, "mixed")
    report = {
        "model": f"{args.model}: {args.model_path or 'shipped'}",
        "classifier_accuracy_on_real_crops": round(real_acc, 4),
        "classifier_accuracy_on_vae_roundtrip": round(vae_roundtrip_accuracy(net, pipe.vae, cats, 3, args.seed + 1), 4),
        "steps": steps,
        "pool": args.pool,
        "overrides": args.overrides,
    }
    report["classifier_on_vae_canvas_roundtrip"] = vae_canvas_roundtrip(net, pipe.vae, cats, 24, args.seed + 2)

    def save(complete: bool) -> None:  # after each part, so a long run stopped half-way keeps what it measured
        if args.out:
            atomic_write_json(args.out, {**report, "complete": complete})

    print(
        f"classifier on real crops {real_acc:.4f}, on VAE round trips {report['classifier_accuracy_on_vae_roundtrip']}"
        f", on 2x2 canvases of real renders {report['classifier_on_vae_canvas_roundtrip']}",
        file=sys.stderr,
        flush=True,
    )

    # (a) fidelity on generated single objects (N = 1), --per-category per category and more while --mosaics allows
    guidances = args.guidance or [float(cfg.generator.guidance_scale)]
    report["fidelity"], runs = {}, {}
    for g in guidances:
        runs[g] = run_mosaics(
            pipe,
            main_cats,
            1,
            max(args.mosaics, args.per_category * len(main_cats)),
            steps,
            args.seed,
            [*args.overrides, f"generator.guidance_scale={g}"],
            mixed_cats,
            args.model,
        )
        report["fidelity"][str(g)] = single_object_fidelity(net, cats, runs[g][0])
        print(f"guidance {g}: {json.dumps(report['fidelity'][str(g)])}", file=sys.stderr, flush=True)
        save(False)
    singles, sec1 = runs[guidances[0]]
    report.update(
        {k: report["fidelity"][str(guidances[0])][k] for k in ("class_fidelity", "colour_correct", "shape_correct")}
    )
    report["guidance"] = guidances[0]

    # (b) mask IoU vs the reference annotator, (c) seconds per mosaic, (d) class fidelity of the kept regions,
    # for N = 1, 2, 4
    all_regions = []
    for n in sorted({1, *args.n}):
        results, sec = (
            (singles, sec1)
            if n == 1
            else run_mosaics(
                pipe,
                main_cats,
                n,
                args.mosaics,
                steps,
                args.seed,
                [*args.overrides, f"generator.guidance_scale={guidances[0]}"],
                mixed_cats,
                args.model,
            )
        )
        kept_ious, regions = [], 0
        for res in results:
            regions += len(res.plan.layout.regions)
            if not res.kept:
                continue
            for reg, m in zip(res.plan.layout.regions, res.masks):
                crop = res.image[reg.top : reg.bottom, reg.left : reg.right]
                kept_ious.append(iou(m[reg.top : reg.bottom, reg.left : reg.right], segment_saturated(crop)))
        report[f"N{n}"] = {
            "mosaics": len(results),
            "kept": sum(r.kept for r in results),
            "mask_mIoU_kept": round(float(np.mean(kept_ious)), 4) if kept_ious else None,
            "regions_kept": len(kept_ious),
            "seconds_per_mosaic": round(sec, 3),
        }
        skipped = [r.reason for r in results if not r.kept]
        report[f"N{n}"]["skip_examples"] = skipped[:3]
        recs = region_records(net, cats, results)
        all_regions += recs
        report[f"N{n}"]["regions"] = summarise_regions(recs, tuple(cfg.generator.region_size))
        report[f"N{n}"]["region_records"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in recs]
        print(
            f"N={n}: kept {report[f'N{n}']['kept']}/{len(results)}, mask mIoU {report[f'N{n}']['mask_mIoU_kept']}, "
            f"region fidelity "
            f"{report[f'N{n}']['regions'].get('fidelity')} (reference crop "
            f"{report[f'N{n}']['regions'].get('fidelity_reference_crop')})",
            file=sys.stderr,
            flush=True,
        )
        save(False)
    if args.misclassified:
        print(
            f"{misclassified_grid([r for r in all_regions if r['n'] > 1], args.misclassified)} misclassified "
            f"mosaic regions -> {args.misclassified}",
            file=sys.stderr,
        )
    printed = {
        k: ({kk: vv for kk, vv in v.items() if kk != "region_records"} if isinstance(v, dict) else v)
        for k, v in report.items()
    }
    print(json.dumps(printed, indent=2))
    save(True)


if __name__ == "__main__":
    main()
