"""mfexp.lvis: the LVIS format's records, masks, image paths and frequency groups."""

import numpy as np
import pytest

from mfexp.lvis import (
    COCO_URL_PREFIX,
    annotation_mask,
    decode_rle,
    image_record,
    image_relpath,
    lvis_frequency,
    mask_annotation,
    select_categories,
)


def test_records_and_rle_round_trip():
    mask = np.zeros((12, 10), bool)
    mask[2:5, 3:9] = True
    ann = mask_annotation(mask, 7, 3, 5)
    assert ann["bbox"] == [3.0, 2.0, 6.0, 3.0] and ann["area"] == 18.0 and ann["iscrowd"] == 0
    assert isinstance(ann["segmentation"]["counts"], str) and (decode_rle(ann["segmentation"]) == mask).all()
    img = image_record(3, "0000003.jpg", 12, 10)
    assert img["coco_url"] == COCO_URL_PREFIX + "synthetic/0000003.jpg"
    assert COCO_URL_PREFIX == "http://images.cocodataset.org/"


def test_every_segmentation_form_gives_the_same_mask():
    mask = np.zeros((8, 8), bool)
    mask[2:6, 1:5] = True
    compressed = mask_annotation(mask, 1, 1, 1)["segmentation"]
    uncompressed = {"size": [8, 8], "counts": [10, 4, 4, 4, 4, 4, 4, 4, 26]}  # column-major runs, zeros first
    polygon = [[1, 2, 5, 2, 5, 6, 1, 6]]
    assert (annotation_mask(compressed, 8, 8) == mask).all()
    assert (annotation_mask(uncompressed, 8, 8) == mask).all()
    assert (annotation_mask(polygon, 8, 8) == mask).all()


def test_image_paths_come_from_file_name_else_coco_url():
    assert image_relpath({"file_name": "a/b.png", "coco_url": COCO_URL_PREFIX + "train2017/x.jpg"}) == "a/b.png"
    assert image_relpath({"coco_url": COCO_URL_PREFIX + "val2017/000000000139.jpg"}) == "val2017/000000000139.jpg"


def test_frequency_groups():
    assert [lvis_frequency(n) for n in (0, 10, 11, 100, 101)] == ["r", "r", "c", "c", "f"]
    cats = [{"id": 3, "frequency": "r"}, {"id": 1, "frequency": "c"}, {"id": 2, "frequency": "r"}]
    assert [c["id"] for c in select_categories(cats, ["r"], "k")] == [2, 3]
    with pytest.raises(ValueError, match="k: unknown frequency"):
        select_categories(cats, ["x"], "k")
