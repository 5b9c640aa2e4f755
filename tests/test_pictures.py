"""Pictures that tell the truth: the gallery and the prediction overlays show each object in its own colour (outlines
and labels only), and the report's paired plots have readable x labels."""

import cv2
import numpy as np

from mfexp.draw import PALETTE, enlarge, prediction_overlays, write_gallery
from mfexp.fileio import encode_jpeg, read_rgb
from mfexp.lvis import encode_rle, image_record

BLUE = (40, 60, 220)


def disc_image(tmp_path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A 128 px grey image with a blue disc, written as ``tmp_path/name``; returns (rgb, mask)."""
    rgb = np.full((128, 128, 3), 128, np.uint8)
    mask = np.zeros((128, 128), np.uint8)
    cv2.circle(mask, (64, 76), 30, 1, -1)
    rgb[mask > 0] = BLUE
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(encode_jpeg(rgb, 100))
    return read_rgb(tmp_path / name), mask > 0


def inside(mask: np.ndarray, margin: int = 4) -> np.ndarray:
    """The mask without a band of ``margin`` pixels along its edge (where the outline lies)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0


def assert_own_colours(picture: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> None:
    """The picture's first tile shows the object's pixels as the image has them, and an outline around it."""
    big, (big_mask,) = enlarge(rgb, [mask], picture.shape[0])
    tile = picture[:, : big.shape[1]].astype(int)
    core = inside(big_mask)
    assert core.sum() > 1000
    assert np.abs(tile[core] - big[core].astype(int)).mean() < 4  # JPEG's error only
    edge = big_mask & ~inside(big_mask, 1)
    outline = np.abs(tile[edge] - PALETTE[0]).max(axis=1) < 60
    assert outline.mean() > 0.5


def test_gallery_shows_each_object_in_its_own_colour(tmp_path):
    rgb, mask = disc_image(tmp_path, "images/a.jpg")
    image = image_record(1, "a.jpg", 128, 128)
    ann = {"id": 1, "image_id": 1, "category_id": 3, "segmentation": encode_rle(mask)}
    write_gallery(tmp_path, [image], [ann], [{"id": 3, "name": "blue_circle"}], 1)
    assert_own_colours(read_rgb(tmp_path / "gallery.jpg"), rgb, mask)


def test_prediction_overlays_show_each_object_in_its_own_colour(tmp_path):
    rgb, mask = disc_image(tmp_path, "val/a.jpg")
    gt = {"images": [image_record(1, "a.jpg", 128, 128)], "categories": [{"id": 3, "name": "blue_circle"}]}
    pred = {"image_id": 1, "category_id": 3, "score": 0.9, "segmentation": encode_rle(mask)}
    out = prediction_overlays([pred], gt, str(tmp_path / "val"), str(tmp_path / "predictions.jpg"))
    assert_own_colours(read_rgb(out), rgb, mask)


def test_paired_plot_labels_name_keys_by_their_last_part():
    from mfexp.report import short_keys, tick_label

    keys = ["synthetic.images_per_category", "generator.num_objects"]
    assert tick_label({keys[0]: "20", keys[1]: "2"}, keys) == "images_per_category=20\nnum_objects=2"
    assert short_keys(["generator.overlap", "generator.model.overlap", "seed"]) == {
        "generator.overlap": "generator.overlap",
        "generator.model.overlap": "generator.model.overlap",
        "seed": "seed",
    }
