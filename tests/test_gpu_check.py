"""benchmarks/gpu_check.sh --cpu: the GPU check's dry run writes a JSON with every field (issue 21), and the
generator path it runs never imports the detector stack (the GPU machine has no mmdet, mmcv or wandb)."""

import json
import os
import subprocess
import sys

from helpers import ROOT

PRECISION_FIELDS = {"seconds_per_mosaic", "plain_seconds_per_mosaic", "generator_vs_plain", "capture_overhead"}


def test_gpu_check_cpu_dry_run(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_JSON=str(out))
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--cpu"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["skipped"] == [], proc.stderr[-3000:]
    assert report["device"] == "cpu" and report["regions_per_mosaic"] == 4 and report["steps"] == 2
    for precision in ("fp32", "bf16", "bf16_compiled"):
        fields = report[precision]
        for name in PRECISION_FIELDS:
            assert isinstance(fields[name], float) and fields[name] > -1, (precision, name, fields)
        assert set(fields["peak_mb"]) == {"after", "nocapture", "plain"} | (
            {"plain_crops"} if precision == "bf16" else set()
        )
        assert (fields["generator_vs_plain_crops"] is not None) == (precision == "bf16")
    assert set(report["bf16_batch_sweep"]) == {"1", "2"}
    for entry in report["bf16_batch_sweep"].values():
        assert entry["mosaics_per_second"] > 0 and entry["peak_mb"] > 0
    assert report["setup_seconds"] >= 0 and report["total_seconds"] > 0


def test_generator_path_imports_no_detector_stack():
    code = (
        "import sys\n"
        "from mfexp.compose import compose\n"
        "from mfexp.mosaicfusion import attention, masks, models, pipeline\n"
        "from mfexp.mosaicfusion.families import unet\n"
        "from mfexp.toyworld import world\n"
        "bad = sorted(m for m in ('mmdet', 'mmcv', 'mmengine', 'wandb', 'pycocotools', 'lvis') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"the generator path imports {proc.stdout.strip()}"


def test_gpu_train_mmdit_script_on_the_cpu(tmp_path):
    """scripts/gpu_train_mmdit.sh (TRAIN_DEVICE=cpu, tiny settings): trains, stops at --steps or the time limit, and
    leaves the three files that come back from the GPU machine; the weights export to a loadable toy MM-DiT."""
    from mfexp.toyworld.toy_mmdit import export, load_toy_mmdit

    out = tmp_path / "gpu_run"
    env = dict(os.environ, PYTHON=sys.executable, TRAIN_DEVICE="cpu")
    args = [
        "--layers",
        "1",
        "--heads",
        "2",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--steps",
        "3",
        "--ema-decay",
        "0.9",
    ]
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/gpu_train_mmdit.sh"), str(out), "5", "--", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert {"transformer.safetensors", "state.json", "train.log"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "state.json").read_text())["step"] == 3
    pipe = load_toy_mmdit(export(out / "transformer.safetensors", tmp_path / "exported"))
    assert pipe.transformer.config.num_layers == 1
