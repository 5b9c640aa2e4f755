"""Denoiser families behind one interface (placeholder until the lead's `Family` base lands on main)."""

from __future__ import annotations


class Family:
    """What differs per denoiser family; pipeline.py calls only this (see the contract in the lead's version)."""

    def __init__(self, pipe, gcfg):
        self.pipe, self.cfg = pipe, gcfg


def _registry() -> dict:
    from .flux import FluxFamily
    from .sd3 import SD3Family
    from .sdxl import SDXLFamily

    return {"sdxl": SDXLFamily, "sd3": SD3Family, "flux": FluxFamily}
