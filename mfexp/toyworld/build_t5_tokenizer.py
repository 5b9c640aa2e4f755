"""Build the small offline T5 (SentencePiece) tokenizer fixture in ``mfexp/assets/t5_tokenizer/``.

    python -m mfexp.toyworld.build_t5_tokenizer [--out DIR] [--vocab-size N]

A unigram SentencePiece model trained on the toy world's caption corpus (every category's caption, with and
without its definition) plus the CLIP fixture's common English / LVIS-style words, with T5's special ids
(pad 0, eos 1, unk 2, no bos); then converted to a fast tokenizer (``tokenizer.json``) so that the tests load it
with ``transformers.T5TokenizerFast`` alone (no sentencepiece or protobuf at test time). Needs the ``sentencepiece``
and ``protobuf`` packages to build.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def corpus_lines() -> list[str]:
    """The toy world's captions and the common-word list, one sentence a line (deterministic order)."""
    from mfexp.toyworld.build_tokenizer import COMMON_WORDS
    from mfexp.toyworld.world import build_categories, caption

    lines = []
    for cat in build_categories():
        lines += [caption(cat["name"]), caption(cat["name"], with_def=True)]
    words = list(COMMON_WORDS)
    lines += [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    lines += words  # each common word also on its own, so that it becomes a piece
    lines += ["a bat (animal), a car (automobile): the (word) in brackets; 0 1 2 3 4 5 6 7 8 9 - ' \" ! ? / &"]
    return lines


def build(out: Path, vocab_size: int = 1000) -> Path:
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "corpus.txt"
        text.write_text("\n".join(corpus_lines()) + "\n")
        spm.SentencePieceTrainer.train(
            input=str(text),
            model_prefix=str(out / "spiece"),
            model_type="unigram",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=1.0,
            normalization_rule_name="identity",  # no NFKC table: a few KB instead of a few hundred
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            num_threads=1,
            minloglevel=2,
        )
    (out / "spiece.vocab").unlink()
    # from_pretrained on a folder holding only spiece.model converts it to a fast (tokenizers) tokenizer
    tok = T5TokenizerFast.from_pretrained(str(out), extra_ids=0, model_max_length=512)
    tok.save_pretrained(str(out))
    return out


def main() -> None:
    from mfexp.assets import t5_tokenizer_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=t5_tokenizer_path())
    parser.add_argument("--vocab-size", type=int, default=1000)
    args = parser.parse_args()
    print(build(args.out, args.vocab_size))


if __name__ == "__main__":
    main()
