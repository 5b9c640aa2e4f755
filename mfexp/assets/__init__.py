"""Files shipped with the package: the offline CLIP and T5 tokenizer fixtures and the toy text-to-image weights."""

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


def t5_tokenizer_path() -> Path:
    """Folder of the small offline T5 (SentencePiece) tokenizer (``python -m mfexp.toyworld.build_t5_tokenizer``)."""
    return ASSETS_DIR / "t5_tokenizer"


def load_t5_tokenizer():
    """The offline T5 tokenizer (a ``transformers.T5TokenizerFast`` read from its ``tokenizer.json``)."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(str(t5_tokenizer_path()))


def toy_t2i_path() -> Path:
    """Folder of the shipped toy text-to-image pipeline (``StableDiffusionPipeline.from_pretrained(...)``)."""
    return ASSETS_DIR / "toy_t2i"


def toy_mmdit_path() -> Path:
    """Folder of the shipped toy MM-DiT (transformer + text projection; mfexp.toyworld.toy_mmdit loads it)."""
    return ASSETS_DIR / "toy_mmdit"
