"""Class fidelity of the synthetic sets that runs fed their detector: every instance, as labelled.

For each run folder, every instance of ``synthetic/annotations.json`` is cropped by its own mask from its image and
named by the toy-quality classifier (benchmarks/toy_quality.py: a small CNN trained on real toy-world crops). The
share named as labelled is the set's class fidelity; the shares with the labelled colour and with the labelled shape
tell what kind of errors the rest are. Reported for all instances, for those of rare categories (the main category
of each MosaicFusion mosaic; what APr is measured on) and, in ``--out``, per category. Unlike toy_quality (d), which
generates mosaics of its own, this reads exactly what a run trained on, so a positive control's corrupted labels show
up too.

    python benchmarks/synthetic_fidelity.py RUN_DIR [RUN_DIR ...] [--classifier FILE] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from toy_quality import classifier, crop_object, to_tensor, train_classifier  # noqa: E402

from mfexp.lvis import decode_rle  # noqa: E402
from mfexp.runpaths import RunPaths  # noqa: E402
from mfexp.toyworld.world import build_categories, split_name  # noqa: E402


def load_classifier(path: Path | None, cats: list, epochs: int = 20):
    """The toy-quality classifier: read from ``path`` if it exists (a file this script or toy_quality wrote), else
    trained as toy_quality trains it (120 real crops per category) and written there."""
    if path and path.exists():
        state = torch.load(path, weights_only=True)
        net = classifier(len(cats))
        net.load_state_dict(state["net"])
        return net.eval(), float(state["accuracy"])
    net, acc = train_classifier(cats, 120, epochs)
    if path:
        torch.save({"net": net.state_dict(), "accuracy": torch.tensor(acc)}, path)
    return net.eval(), acc


def instance_records(run_dir: Path) -> list[dict]:
    """One record per synthetic instance: its label, the label's frequency group, and its crop."""
    paths = RunPaths(run_dir)
    data = json.loads(paths.synthetic_annotations.read_text())
    cats = {c["id"]: c for c in data["categories"]}
    files = {im["id"]: paths.synthetic_images / im["file_name"].split("/")[-1] for im in data["images"]}
    images: dict = {}
    recs = []
    for ann in data["annotations"]:
        if ann["image_id"] not in images:
            images[ann["image_id"]] = cv2.cvtColor(cv2.imread(str(files[ann["image_id"]])), cv2.COLOR_BGR2RGB)
        mask = decode_rle(ann["segmentation"]).astype(bool)
        if mask.sum() < 4:
            continue
        cat = cats[ann["category_id"]]
        recs.append(
            {"label": cat["name"], "frequency": cat["frequency"], "crop": crop_object(images[ann["image_id"]], mask)}
        )
    return recs


def rates(recs: list[dict]) -> dict:
    n = len(recs)
    if not n:
        return {"instances": 0}
    return {
        "instances": n,
        "fidelity": round(sum(r["pred"] == r["label"] for r in recs) / n, 4),
        "colour": round(sum(split_name(r["pred"])[0] == split_name(r["label"])[0] for r in recs) / n, 4),
        "shape": round(sum(split_name(r["pred"])[1] == split_name(r["label"])[1] for r in recs) / n, 4),
    }


def score_run(net, names: list[str], run_dir: Path) -> dict:
    recs = instance_records(run_dir)
    with torch.no_grad():
        for i in range(0, len(recs), 256):
            chunk = recs[i : i + 256]
            pred = net(to_tensor([r["crop"] for r in chunk])).argmax(1).numpy()
            for r, p in zip(chunk, pred):
                r["pred"] = names[p]
    by_label: dict = {}
    for r in recs:
        by_label.setdefault(r["label"], []).append(r)
    return {
        "run": str(run_dir),
        "all": rates(recs),
        "rare": rates([r for r in recs if r["frequency"] == "r"]),
        "per_category": {name: rates(rs) for name, rs in sorted(by_label.items())},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders with synthetic/annotations.json")
    p.add_argument("--classifier", type=Path, help="classifier state file: loaded if it exists, else written")
    p.add_argument("--out", type=Path, help="results as JSON")
    args = p.parse_args()
    missing = [r for r in args.runs if not RunPaths(r).synthetic_annotations.is_file()]
    if missing:
        p.error(f"no synthetic/annotations.json in {', '.join(map(str, missing))}")
    cats = build_categories()
    names = [c["name"] for c in cats]
    net, acc = load_classifier(args.classifier, cats)
    print(f"classifier accuracy on held-out real crops: {acc:.4f}")
    results = [score_run(net, names, r) for r in tqdm(args.runs, desc="runs")]
    print(f"{'run':60s} {'n':>5s} {'fidelity':>8s} {'colour':>7s} {'shape':>6s} | {'rare n':>6s} {'fidelity':>8s}")
    for res in results:
        a, r = res["all"], res["rare"]
        print(
            f"{Path(res['run']).name[:60]:60s} {a['instances']:5d} {a.get('fidelity', 0):8.3f}"
            f" {a.get('colour', 0):7.3f} {a.get('shape', 0):6.3f} | {r['instances']:4d} {r.get('fidelity', 0):8.3f}"
        )
    if args.out:
        args.out.write_text(json.dumps({"classifier_accuracy": round(acc, 4), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
