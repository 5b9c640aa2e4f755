"""Files shipped with the package: the offline CLIP tokenizer fixture and the toy text-to-image weights."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent


def tokenizer_path() -> Path:
    """Folder of the small offline CLIP tokenizer (``CLIPTokenizer.from_pretrained(tokenizer_path())``)."""
    return ASSETS_DIR / "clip_tokenizer"


def load_tokenizer():
    """The offline CLIP tokenizer (a ``transformers.CLIPTokenizer``)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(tokenizer_path()))


def toy_t2i_path() -> Path:
    """Folder of the shipped toy text-to-image pipeline (``StableDiffusionPipeline.from_pretrained(...)``)."""
    return ASSETS_DIR / "toy_t2i"
