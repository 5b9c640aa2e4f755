"""Does a toy MM-DiT use the shape word, and how far is it from the toy UNet? A measurement without sampling.

Fixed batches of real renders (seeded, so every model sees the same data) are encoded and noised to flow time s
(x = (1 - s) x0 + s noise); the model predicts the velocity noise - x0 once, with the right caption and with the
caption of another shape in the same colour (and form). On the object's latent pixels it reports:
- `right`, `wrong_shape`: the squared error per latent value, right caption and wrong shape;
- `shape_gap` = wrong_shape - right: how much the shape word helps (0: the model ignores it);
- `to_teacher`: the squared distance to the shipped toy UNet's velocity for the right caption (its epsilon
  prediction converted, `train_mmdit.velocity_from_eps`), and the toy UNet's own `right` / `wrong_shape`.
Class fidelity (`toy_quality.py`, 48 samples: +-14 points) moves in jumps; these move smoothly with training, so
two snapshots a few hundred steps apart can be told apart. Deterministic: the same weights give the same numbers.

    python benchmarks/toy_shape_gap.py SNAPSHOT.safetensors [...] [--s 0.3 0.5 0.7] [--batches 2] [--out F.json]

A SNAPSHOT is a trainer weights file (`<run>/snapshots/transformer_<step>.safetensors` or a checkpoint's), whose
metadata names its architecture. A few seconds a snapshot and s on 2 threads (2 batches of 48).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mfexp.toyworld.world import COLOURS, build_categories  # noqa: E402

# categories are shape-major (every colour of a shape in turn) and each has two caption forms: this many rows on is
# the same colour and form of the next shape
OTHER_SHAPE = 2 * len(COLOURS)


def object_error(pred: torch.Tensor, target: torch.Tensor, cover: torch.Tensor) -> float:
    """Mean squared error per latent value over the object's latent pixels (`cover` (rows, 1, h, w) in [0, 1])."""
    return float((((pred - target) ** 2) * cover).sum() / (cover.sum() * pred.shape[1]))


@torch.no_grad()
def measure(weights: Path, s_values: list[float], batches: int, teacher) -> dict:
    """The report of one snapshot; `teacher` is a `train_mmdit.UNetTeacher` over `caption_prompts` (built once)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from mfexp.toyworld.train_mmdit import (
        MMDiTTrainConfig,
        StepBatches,
        build_pipeline,
        caption_bank,
        predict_velocity,
    )

    with safe_open(str(weights), "pt") as f:
        arch = json.loads((f.metadata() or {}).get("architecture", "{}"))
    cfg = MMDiTTrainConfig(batch_size=48, caption_dropout=0.0, **arch)
    pipe = build_pipeline(cfg)
    pipe.transformer.load_state_dict(load_file(str(weights)))
    pipe.transformer.eval()
    names = [c["name"] for c in build_categories()]
    embeds, pooled = caption_bank(pipe, names, cfg.max_sequence_length)
    data = StepBatches(cfg, names, len(embeds), (4, 16, 16))
    vae = pipe.vae
    shift, scale = vae.config.shift_factor or 0.0, vae.config.scaling_factor
    out = {}
    for s_value in s_values:
        sums = dict.fromkeys(("right", "wrong_shape", "to_teacher", "teacher_right", "teacher_wrong_shape"), 0.0)
        for k in range(batches):
            b = data[10**6 + k]  # steps no training run reaches
            x0 = (vae.encode(b["images"]).latent_dist.mean - shift) * scale
            s = torch.full_like(b["s"], s_value)
            xs, target = (1 - s) * x0 + s * b["noise"], b["noise"] - x0
            cover = F.adaptive_avg_pool2d(b["masks"], x0.shape[-2:])
            right, wrong = b["row"], (b["row"] + OTHER_SHAPE) % (2 * len(names))

            def velocity(rows, xs=xs, s=s):
                return predict_velocity(pipe.transformer, xs, s, embeds[rows], pooled[rows])

            v_right, t_right = velocity(right), teacher.velocity(xs, s, right)
            sums["right"] += object_error(v_right, target, cover)
            sums["wrong_shape"] += object_error(velocity(wrong), target, cover)
            sums["to_teacher"] += object_error(v_right, t_right, cover)
            sums["teacher_right"] += object_error(t_right, target, cover)
            sums["teacher_wrong_shape"] += object_error(teacher.velocity(xs, s, wrong), target, cover)
        means = {k: v / batches for k, v in sums.items()}
        means["shape_gap"] = means["wrong_shape"] - means["right"]
        means["teacher_shape_gap"] = means["teacher_wrong_shape"] - means["teacher_right"]
        out[str(s_value)] = {k: round(v, 4) for k, v in means.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("snapshots", type=Path, nargs="+")
    p.add_argument("--s", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="flow times to measure at")
    p.add_argument("--batches", type=int, default=2, help="batches of 48 renders (the same for every snapshot)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="write the report here as JSON")
    args = p.parse_args(argv)
    for path in args.snapshots:
        if not path.is_file():
            p.error(f"{path}: no such weights file")
    torch.set_num_threads(args.threads)
    from mfexp.toyworld.train_mmdit import UNetTeacher, caption_prompts

    names = [c["name"] for c in build_categories()]
    teacher = UNetTeacher("toy", caption_prompts(names), torch.device("cpu"))
    report = {}
    for path in args.snapshots:
        report[str(path)] = measure(path, args.s, args.batches, teacher)
        for s_value, row in report[str(path)].items():
            print(f"{path.name} s={s_value}: " + " ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
