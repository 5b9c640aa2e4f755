"""Augmenters, datasets and stages are named by `_target_` and looked up through Hydra (mfexp.targets); a missing
third-party package is one line naming it and the install command."""

import os
import subprocess
import sys

import pytest
from helpers import ROOT, compose

from mfexp.targets import MissingPackage, locate


def test_every_configured_target_is_a_function():
    from mfexp.run import STAGES

    for dotted in STAGES.values():
        assert callable(locate(dotted, "stage"))
    for group, choices in (
        ("augmenter", ("mosaicfusion", "cut_paste", "copy_paste", "none")),
        ("dataset", ("toyworld", "lvis_v1")),
    ):
        for choice in choices:
            target = compose([f"{group}={choice}"])[group]._target_
            assert target.startswith("mfexp.") and callable(locate(target, f"{group}._target_"))


@pytest.mark.parametrize("dotted", ["mfexp.augmenters.none.no_such_function", "mfexp.no_such_module.fn", ""])
def test_a_bad_name_is_a_one_line_error_naming_the_key(dotted):
    with pytest.raises(ValueError, match=r"^augmenter\._target_=") as e:
        locate(dotted, "augmenter._target_")
    assert "\n" not in str(e.value)


def test_a_missing_package_is_named_with_the_install_command(tmp_path, monkeypatch):
    (tmp_path / "needs_missing.py").write_text(
        "import mfexp_test_absent_package.sub\n\ndef train(cfg, run_dir):\n    return {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingPackage) as e:
        locate("needs_missing.train", "stage train")
    assert e.value.name == "mfexp_test_absent_package"
    assert str(e.value) == (
        "stage train (needs_missing.train) needs the Python package 'mfexp_test_absent_package', "
        "which is not installed; install the dependencies with: bash scripts/setup.sh"
    )


def test_the_command_line_names_a_missing_mmdet(tmp_path):
    """`python -m mfexp stages=[train]` without mmdet: exit 2 and one error line, no traceback."""
    code = (
        "import sys; sys.modules['mmdet'] = None; from mfexp.__main__ import main; "
        f"sys.argv = ['mfexp', 'stages=[train]', 'logger=none', 'paths.log_dir={tmp_path}']; main()"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: stage train (mfexp.detection.stages.train) needs the Python package 'mmdet', which is not installed; "
        "install the dependencies with: bash scripts/setup.sh (details: "
    ), errors  # the run folder's failed.json
