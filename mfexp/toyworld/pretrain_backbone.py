"""Pretrain the toy detector's backbone once, ImageNet-style, on a procedural classification corpus.

`python -m mfexp.toyworld.pretrain_backbone --out DIR` (`--help` for options) reproduces the shipped
`mfexp/assets/toy_backbone/backbone.safetensors`.

What the corpus is, and why: the paper's detector starts from an ImageNet-pretrained ResNet-50, i.e. from features
learned on a large, *differently labelled* image corpus before it ever sees LVIS. Here each image holds one object on a
textured toy-world background; the label is the object's **shape only**, out of 14: the toy world's 8 shapes plus 6
others (pentagon, octagon, 4-, 6- and 7-pointed stars, ellipse). Colours are drawn from the whole hue circle (any hue,
saturation and brightness), never from the toy world's 6 named colours as labels, so the backbone learns shapes,
edges and colour features but never the detector's 48 colour x shape categories; those, the long tail and the
rare ones included, still have to be learned from the detection data (real or synthetic). The corpus is uniform over
shapes and is rendered from its own seeds, independent of the toy world's train/val images.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mfexp.toyworld.world import (
    SHAPES,
    _points_in_polygon,
    _regular_polygon,
    _star_polygon,
    paste,
    render_background,
    shape_mask,
)

EXTRA_SHAPES = ("pentagon", "octagon", "star4", "star6", "star7", "ellipse")
CLASSES = SHAPES + EXTRA_SHAPES
# the toy detector's backbone (conf/detector/mask_rcnn_toy.yaml): mmdet's ResNet-18 layout at half width
BACKBONE = dict(
    type="ResNet",
    depth=18,
    base_channels=32,
    num_stages=4,
    out_indices=(0, 1, 2, 3),
    norm_cfg=dict(type="BN", requires_grad=True),
    style="pytorch",
)
MEAN = np.array([123.675, 116.28, 103.53], np.float32)  # the detector's data_preprocessor (RGB)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def extra_shape_mask(shape: str, size: int, rotation: float, rng: np.random.Generator) -> np.ndarray:
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    xx, yy = np.meshgrid(c, -c)
    t = np.deg2rad(rotation)
    u, v = np.cos(t) * xx + np.sin(t) * yy, -np.sin(t) * xx + np.cos(t) * yy
    if shape == "pentagon":
        return _points_in_polygon(u, v, _regular_polygon(5, 0.95))
    if shape == "octagon":
        return _points_in_polygon(u, v, _regular_polygon(8, 0.95, phase_deg=22.5))
    if shape.startswith("star"):
        return _points_in_polygon(u, v, _star_polygon(int(shape[4:]), 0.97, 0.45))
    if shape == "ellipse":
        a = rng.uniform(0.45, 0.7)
        return (u / 0.95) ** 2 + (v / a) ** 2 <= 1.0
    raise ValueError(f"unknown corpus shape {shape!r}")


def render_sample(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One corpus image: a shape of class ``label`` in a random hue, scale, place and rotation on a background."""
    rgb = render_background(size, size, rng)
    side = max(6, int(round(rng.uniform(0.3, 0.85) * size)))
    shape, rot = CLASSES[label], rng.uniform(0, 360)
    mask = shape_mask(shape, side, rot) if shape in SHAPES else extra_shape_mask(shape, side, rot, rng)
    colour = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))) * 255
    shade = rng.uniform(0.85, 1.1) + rng.normal(0, 0.02, size=(side, side, 1))
    obj = np.clip(colour[None, None] * shade + rng.normal(0, 5, size=(side, side, 3)), 0, 255).astype(np.uint8)
    top, left = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    paste(rgb, obj, mask, top, left)
    return rgb


def render_corpus(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    images = np.stack([render_sample(int(y), size, rng) for y in tqdm(labels, desc="render corpus", leave=False)])
    return images, labels


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((images.astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2).copy())


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules

        register_all_modules()
        self.backbone = MODELS.build(BACKBONE)
        self.backbone.init_weights()
        self.head = torch.nn.Linear(32 * 8, len(CLASSES))

    def forward(self, x):
        return self.head(self.backbone(x)[-1].mean((2, 3)))


def accuracy(model, images, labels, batch=256) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_tensor(images[i : i + batch])).argmax(1) for i in range(0, len(images), batch)])
    model.train()
    return float((pred.numpy() == labels).mean())


def train(args) -> dict:
    torch.manual_seed(args.seed)
    start = time.time()
    images, labels = render_corpus(args.images, args.size, args.seed)
    val_images, val_labels = render_corpus(args.val_images, args.size, args.seed + 1)
    model = Classifier()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    rng = np.random.default_rng(args.seed + 2)
    bar = tqdm(range(args.steps), desc="pretrain backbone")
    for step in bar:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps)) * min(1.0, (step + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, len(images), args.batch)
        x = images[idx]
        flip = rng.random(len(idx)) < 0.5
        x[flip] = x[flip, :, ::-1]
        loss = F.cross_entropy(model(to_tensor(x)), torch.from_numpy(labels[idx]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3f}")
    info = dict(
        classes=list(CLASSES),
        **{k: getattr(args, k) for k in ("images", "size", "steps", "batch", "lr", "seed")},  # the settings
        val_accuracy=round(accuracy(model, val_images, val_labels), 4),
        seconds=round(time.time() - start, 1),
        backbone=BACKBONE,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, str(out / "backbone.safetensors"))
    (out / "backbone.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for backbone.safetensors and backbone.json")
    p.add_argument("--images", type=int, default=24000, help="corpus images (rendered once, kept in memory)")
    p.add_argument("--val-images", type=int, default=1400)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=12345)
    info = train(p.parse_args(argv))
    print(json.dumps({k: v for k, v in info.items() if k != "backbone"}, indent=2))


if __name__ == "__main__":
    main()
