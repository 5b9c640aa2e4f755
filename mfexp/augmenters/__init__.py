"""The augmenters, one module each, named by ``conf/augmenter/<name>.yaml``'s ``_target_`` (the generate stage's
function, called as ``fn(cfg, run_dir, tracker)``): ``mosaicfusion``, ``cut_paste``, ``copy_paste`` (online: its part
is the training pipeline) and ``none``.

What an augmenter needs is declared once, beside it, in its YAML's ``uses`` (a list of CAPABILITIES); the runner's
stage hash and ``mfexp.check``'s preflight read it through ``uses(cfg, capability)``.
"""

from __future__ import annotations

CAPABILITIES = {
    "text_to_image": "a text-to-image model (the generator group: its weights are checked, its settings hashed)",
    "synthetic_set": "makes a synthetic set in the run folder's synthetic/ (mfexp.synthetic)",
    "online_pipeline": "changes the detector's training pipeline (augmenter.copy_paste)",
}


def check_uses(capabilities) -> list[str]:
    """An augmenter's ``uses``: a list of CAPABILITIES, each at most once."""
    names = [str(c) for c in capabilities]
    unknown = [c for c in names if c not in CAPABILITIES]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"must list each of {', '.join(CAPABILITIES)} at most once")
    return names


def uses(cfg, capability: str) -> bool:
    """Whether the config's augmenter declares ``capability`` (one of CAPABILITIES)."""
    if capability not in CAPABILITIES:
        raise KeyError(f"{capability!r} is not one of {', '.join(CAPABILITIES)}")
    return capability in (cfg.augmenter.get("uses") or ())
