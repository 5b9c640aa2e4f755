"""The MMDetection side of LVIS-format files: the dataset that reads them, its samplers and transforms.

``MfexpLVISDataset`` is mmdet's ``LVISV1Dataset`` with three differences: image paths come from ``file_name``
(relative to the images folder) when present, else from ``coco_url`` (``train2017/xxx.jpg``, as real LVIS v1 files
have no ``file_name``); class labels follow the *sorted* category ids, so a real and a synthetic file with the same
category set get the same labels whatever their order; class names come from the file (``metainfo``).
``MfexpCopyPaste`` is mmdet's ``CopyPaste`` transform with its source index kept inside the dataset.
"""

from __future__ import annotations

import copy
import random

from mmcv.transforms.utils import cache_randomness
from mmdet.datasets import AspectRatioBatchSampler, ConcatDataset, LVISV1Dataset
from mmdet.datasets.transforms import CopyPaste
from mmdet.registry import DATA_SAMPLERS, DATASETS, TRANSFORMS

from mfexp.lvis import image_relpath


def class_names(data: dict) -> tuple[str, ...]:
    """Class names in label order (sorted category ids)."""
    return tuple(c["name"] for c in sorted(data["categories"], key=lambda c: c["id"]))


@DATASETS.register_module()
class MfexpLVISDataset(LVISV1Dataset):
    """LVIS v1-format dataset with ``file_name``-relative image paths and labels by sorted category id."""

    def load_data_list(self) -> list[dict]:
        from lvis import LVIS

        self.lvis = LVIS(self.ann_file)
        self.cat_ids = sorted(self.lvis.get_cat_ids())
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.cat_img_map = copy.deepcopy(self.lvis.cat_img_map)
        data_list = []
        for img_id in self.lvis.get_img_ids():
            raw_img_info = dict(self.lvis.load_imgs([img_id])[0], img_id=img_id)
            raw_img_info["file_name"] = image_relpath(raw_img_info)
            raw_ann_info = self.lvis.load_anns(self.lvis.get_ann_ids(img_ids=[img_id]))
            data_list.append(self.parse_data_info({"raw_ann_info": raw_ann_info, "raw_img_info": raw_img_info}))
        del self.lvis
        return data_list


@DATASETS.register_module()
class ConcatLVISDataset(ConcatDataset):
    """mmdet's ``ConcatDataset`` plus ``get_cat_ids``, which the repeat-factor wrapper (``ClassBalancedDataset``)
    needs to compute category frequencies over the merged real + synthetic set."""

    def get_cat_ids(self, idx: int) -> list[int]:
        dataset_idx, sample_idx = self._get_ori_dataset_idx(idx)
        return self.datasets[dataset_idx].get_cat_ids(sample_idx)


@DATA_SAMPLERS.register_module()
class EpochAspectRatioBatchSampler(AspectRatioBatchSampler):
    """mmdet's ``AspectRatioBatchSampler`` for epoch-wise loops (Lightning).

    Lightning stops after ``len()`` batches without resuming the generator, which would leave the last batch in
    the buckets for the next epoch (mmengine's loops never stop it): every pass starts with empty buckets. Lightning
    calls ``set_epoch`` on a loader's batch sampler, which hands it to the shuffling sampler (seed + epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        self._aspect_ratio_buckets = [[] for _ in range(2)]
        yield from super().__iter__()


@TRANSFORMS.register_module()
class MfexpCopyPaste(CopyPaste):
    """mmdet's ``CopyPaste`` (Ghiasi et al. 2021) whose source image is a uniformly drawn index of the wrapped
    dataset (under ``MultiImageMixDataset``: the repeat-factor-expanded set, so rare objects are pasted more often).

    mmdet 3.3's ``get_indexes`` draws ``random.randint(0, len(dataset))``, which includes ``len(dataset)``: about one
    sample in ``len(dataset)`` would fail with an IndexError. Required/modified keys: as ``CopyPaste``."""

    @cache_randomness
    def get_indexes(self, dataset) -> int:
        return random.randrange(len(dataset))
