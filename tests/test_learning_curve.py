"""benchmarks/learning_curve.py: class fidelity over training steps, from toy_quality reports or an earlier CSV."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from helpers import ROOT

SCRIPT = str(ROOT / "benchmarks/learning_curve.py")


def report(path: Path, correct: int, samples: int = 48) -> str:
    """A toy_quality.py --out file with only what the curve reads."""
    fidelity = {"3.0": {"samples": samples, "class_fidelity": correct / samples}}
    path.write_text(json.dumps({"guidance": 3.0, "fidelity": fidelity}))
    return str(path)


def test_a_series_is_added_to_an_earlier_figure_from_its_csv(tmp_path):
    a1, a2, b1 = (report(tmp_path / f"{n}.json", k) for n, k in (("a1", 12), ("a2", 24), ("b1", 36)))
    first = tmp_path / "curve.png"
    run = [sys.executable, SCRIPT, "--out"]
    subprocess.run([*run, str(first), "--series", "run a", f"1000={a1}", f"2000={a2}"], check=True)
    earlier = pd.read_csv(first.with_suffix(".csv"))
    assert list(earlier.fidelity) == [25.0, 50.0] and earlier.low.iloc[0] < 25 < earlier.high.iloc[0]
    for f in (a1, a2):  # the JSON files may go now: the CSV carries the points
        Path(f).unlink()
    second = tmp_path / "more.png"
    subprocess.run(
        [*run, str(second), "--previous", str(first.with_suffix(".csv")), "--series", "run b", f"500={b1}"], check=True
    )
    both = pd.read_csv(second.with_suffix(".csv"))
    assert list(both.series) == ["run a", "run a", "run b"] and list(both.fidelity) == [25.0, 50.0, 75.0]
    assert second.stat().st_size > 10_000  # a drawn figure
    # a label given again replaces its earlier points
    third = tmp_path / "again.png"
    subprocess.run(
        [*run, str(third), "--previous", str(second.with_suffix(".csv")), "--series", "run a", f"500={b1}"], check=True
    )
    again = pd.read_csv(third.with_suffix(".csv"))
    assert sorted(zip(again.series, again.step)) == [("run a", 500), ("run b", 500)]
    missing = subprocess.run(
        [*run, str(third), "--previous", str(tmp_path / "none.csv")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr
