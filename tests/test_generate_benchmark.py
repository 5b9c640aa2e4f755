"""benchmarks/generate.py in a dry run: the variants it compares make the same mosaics' region images."""

import json
import subprocess
import sys

from helpers import ROOT


def test_plain_crops_makes_the_generators_region_shapes(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks/generate.py"), "--model", "tiny", "--steps", "2", "--mosaics", "2"]
    cmd += [
        "--rounds",
        "1",
        "--threads",
        "1",
        "--in-process",
        "--variants",
        "after,plain,plain_crops",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["variants"]) == {"after", "plain", "plain_crops"}
    for name in ("generator_vs_plain", "generator_vs_plain_crops"):
        assert report["ratios"][name]["value"] > 0
    assert "generator_vs_plain_crops" in proc.stdout
    pixels = {name: v["region_pixels_per_mosaic"] for name, v in report["variants"].items()}
    nominal = report["regions_per_mosaic"] * report["region_size"][0] * report["region_size"][1]
    assert pixels["plain_crops"] == pixels["after"] > pixels["plain"] == nominal  # overlap: crops are larger
