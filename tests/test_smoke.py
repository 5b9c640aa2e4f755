"""`python -m mfexp experiment=smoke`: the whole pipeline (toy world, shipped toy model, MosaicFusion, Mask R-CNN,
LVIS evaluation) through the real command line, then a re-run that skips every stage."""

import json
import os
import subprocess
import sys

from helpers import ROOT


def test_smoke_experiment_end_to_end(tmp_path):
    env = dict(
        os.environ,
        MFEXP_OUTPUTS=str(tmp_path / "out"),
        MFEXP_CACHE=str(tmp_path / "cache"),
        PYTHONPATH=str(ROOT),
        WANDB_MODE="offline",
    )
    cmd = [sys.executable, "-m", "mfexp", "experiment=smoke"]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "out" / "runs" / "experiment=smoke"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("AP", "APr", "APc", "APf", "AP_novel", "bbox_AP"):
        assert key in metrics
    syn = json.loads((run / "synthetic" / "annotations.json").read_text())
    assert syn["info"]["planned"] == 6 and len(syn["images"]) == syn["info"]["kept"]
    assert (run / "synthetic" / "gallery.jpg").exists() and (run / "train" / "config.py").exists()
    assert (run / "evaluate" / "predictions.json").exists()
    stages = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert stages == {"generate", "train", "evaluate"}, "one offline wandb run per stage"
    assert "mask/box AP in %" in first.stderr + first.stdout
    for note in ("💡 Tip", "requires torchvision", "torch_dtype", "LeafSpec", "Loading pipeline components"):
        assert note not in first.stderr + first.stdout, f"third-party note on the console: {note}"
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stderr + second.stdout
    assert all(f"stage {s}: done earlier for this config, skipped" in log for s in ("generate", "train", "evaluate"))
