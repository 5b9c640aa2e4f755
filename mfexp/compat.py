"""Compatibility shims for third-party code: lvis-api 0.5.3 vs numpy 2, weights-only ``torch.load`` vs mmengine's
scheduler states, mmcv 2.1's float-only ops vs bf16 autocast.

Call :func:`patch_all` once (the detection stages do); every patch is idempotent and scoped as narrowly as the
library allows.
"""

from __future__ import annotations

import collections
import types

import numpy as np


class _NumpyWithAliases(types.ModuleType):
    """``numpy`` plus the aliases numpy 2 removed (``np.float`` ...), for modules written against numpy 1."""

    float = float
    int = int
    bool = bool
    object = object

    def __getattr__(self, name):
        return getattr(np, name)


def patch_lvis() -> None:
    """lvis-api 0.5.3's evaluator uses ``np.float``: give ``lvis.eval`` (only) a numpy with the old aliases."""
    import lvis.eval

    if not isinstance(lvis.eval.np, _NumpyWithAliases):
        lvis.eval.np = _NumpyWithAliases("numpy")


def patch_torch_load() -> None:
    """Let weights-only ``torch.load`` read what mmengine puts in checkpoints and LR-scheduler states.

    mmengine's ``MultiStepLR`` keeps its milestones in a ``collections.Counter`` and Lightning saves scheduler
    states in the checkpoint; torch >= 2.6 refuses such checkpoints by default (weights_only=True).
    """
    import torch

    torch.serialization.add_safe_globals([collections.Counter])


def patch_mmcv_bf16() -> None:
    """mmcv 2.1's ``nms`` and ``RoIAlign`` kernels (CPU and CUDA) have no bfloat16 version: under bf16 autocast
    (``trainer.precision=bf16-mixed``) run them in float32; RoIAlign hands its result back in the input's dtype."""
    import importlib

    import torch
    from mmcv.ops.roi_align import RoIAlign

    nms_module = importlib.import_module("mmcv.ops.nms")  # (``mmcv.ops.nms`` the attribute is the function)
    if getattr(nms_module.nms, "_fp32_for_bf16", False):
        return

    def fp32(*tensors):
        return [t.float() if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 else t for t in tensors]

    nms = nms_module.nms

    def nms_fp32(boxes, scores, *args, **kwargs):
        return nms(*fp32(boxes, scores), *args, **kwargs)

    nms_fp32._fp32_for_bf16 = True
    nms_module.nms = nms_fp32  # batched_nms looks its op up in this module by name

    forward = RoIAlign.forward

    def roi_align_fp32(self, input, rois):
        if input.dtype != torch.bfloat16:
            return forward(self, input, rois)
        return forward(self, *fp32(input, rois)).to(input.dtype)

    RoIAlign.forward = roi_align_fp32


def patch_all() -> None:
    patch_lvis()
    patch_torch_load()
    patch_mmcv_bf16()
