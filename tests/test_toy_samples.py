"""benchmarks/toy_samples.py: the sample grid of a toy model (one row per shape, a real render first)."""

import subprocess
import sys

import numpy as np
from helpers import ROOT
from PIL import Image


def test_sample_grid_of_the_toy_mmdit(tmp_path):
    out = tmp_path / "grid.png"
    cmd = [sys.executable, str(ROOT / "benchmarks/toy_samples.py"), "--model", "toy_mmdit", "--colours", "red", "blue"]
    proc = subprocess.run(cmd + ["--steps", "2", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grid = np.asarray(Image.open(out))
    assert grid.shape == (8 * 64 * 2, 3 * 64 * 2, 3)  # 8 shapes; a real render + 2 colours; scale 2
    real, red = grid[:128, :128].astype(int), grid[:128, 128:256].astype(int)
    assert real.std() > 10 and red.std() > 1 and np.abs(real - red).mean() > 1
