"""The toy detector's pretrained backbone: the corpus, the shipped weights, and how the detector loads them."""

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_detection import make_lvis_fixture
from helpers import ROOT, compose
from safetensors.torch import load_file, save_file

from mfexp.detection import stages
from mfexp.toyworld.pretrain_backbone import CLASSES, Classifier, render_corpus, render_sample
from mfexp.toyworld.world import SHAPES

SHIPPED = ROOT / "mfexp" / "assets" / "toy_backbone" / "backbone.safetensors"
TINY = ["logger=none", "detector.max_iters=2", "detector.batch_size=2", "detector.eval_batch_size=2"]


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    return make_lvis_fixture(tmp_path_factory.mktemp("lvis_fixture"), num_train=4, num_val=2)


def test_corpus_labels_shapes_not_colours():
    assert set(SHAPES) < set(CLASSES) and len(CLASSES) == len(set(CLASSES)) == 14
    assert not any(c in name for name in CLASSES for c in ("red", "blue", "green", "yellow", "cyan", "purple"))
    a, la = render_corpus(28, 64, seed=5)
    b, lb = render_corpus(28, 64, seed=5)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and set(la) == set(range(14))
    # every class draws a saturated object on the grey-ish background
    for label in range(len(CLASSES)):
        rgb = render_sample(label, 64, np.random.default_rng(label)).astype(int)
        saturation = rgb.max(-1) - rgb.min(-1)
        assert (saturation > 60).sum() > 50, CLASSES[label]


def test_shipped_weights_fit_the_toy_detector_and_are_loaded(fixture_files):
    cfg = compose(TINY)
    assert Path(cfg.detector.pretrained) == SHIPPED and SHIPPED.is_file()
    module, _ = stages.build_detector(cfg, fixture_files)
    shipped = load_file(str(SHIPPED))
    own = module.model.backbone.state_dict()
    assert set(shipped) == set(own)
    assert all(torch.equal(own[k], shipped[k]) for k in shipped)
    # the classifier the weights were trained in has exactly this backbone
    assert set(Classifier().backbone.state_dict()) == set(shipped)


def test_from_scratch_and_bad_weights(tmp_path, fixture_files):
    module, _ = stages.build_detector(compose(TINY + ["detector.pretrained=null"]), fixture_files)
    shipped = load_file(str(SHIPPED))
    own = module.model.backbone.state_dict()
    assert not torch.equal(own["conv1.weight"], shipped["conv1.weight"])
    bad = tmp_path / "bad.safetensors"
    save_file({"conv1.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="do not fit this backbone"):
        stages.build_detector(compose(TINY + [f"detector.pretrained={bad}"]), fixture_files)
    with pytest.raises(FileNotFoundError, match="detector.pretrained"):
        stages.build_detector(
            compose(TINY + [f"detector.pretrained={tmp_path / 'missing.safetensors'}"]), fixture_files
        )
