"""mfexp.synthetic: the rules and the files every augmenter's synthetic set shares."""

from collections import Counter

import numpy as np
import pytest

from mfexp import synthetic
from mfexp.lvis import SYNTHETIC_IMAGE_ID_BASE, decode_rle


def test_the_budget_is_images_per_category_per_main_category_capped():
    assert synthetic.image_budget(20, 10, None) == 200
    assert synthetic.image_budget(20, 10, 8) == 8
    assert synthetic.image_budget(3, 2, 100) == 6
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="must be >= 1"):
            synthetic.image_budget(3, bad, None)
    with pytest.raises(ValueError, match="must be >= 1 or null"):
        synthetic.image_budget(3, 2, 0)


def test_one_id_scheme_for_images_and_their_instances():
    masks = [np.eye(4, dtype=bool), np.ones((4, 4), bool)]
    anns = synthetic.image_annotations(7, masks, [3, 5])
    image_id = SYNTHETIC_IMAGE_ID_BASE + 7
    assert synthetic.image_id(7) == image_id and synthetic.image_name(7) == "0000007.jpg"
    assert [a["id"] for a in anns] == [image_id * 1000, image_id * 1000 + 1]
    assert [a["category_id"] for a in anns] == [3, 5] and all(a["image_id"] == image_id for a in anns)
    assert (decode_rle(anns[0]["segmentation"]) == masks[0]).all()
    with pytest.raises(ValueError, match="more than 1000"):
        synthetic.image_annotations(0, [masks[0]] * 1001, [1] * 1001)


def test_the_summary_has_one_planned_count():
    summary = synthetic.summarise(5, [{}, {}], [{}] * 3, Counter({"mask": 3}), pasted=4)
    assert summary == {"planned": 5, "kept": 2, "skipped": 3, "instances": 3, "pasted": 4, "skip_reasons": {"mask": 3}}


def test_the_per_image_n_rule_is_checked_once():
    assert synthetic.check_num_objects(4) == [4] and synthetic.check_num_objects([2, 4]) == [2, 4]
    for bad in (0, [], [2, 0], True, "4"):
        with pytest.raises(ValueError, match="positive integer"):
            synthetic.check_num_objects(bad)
