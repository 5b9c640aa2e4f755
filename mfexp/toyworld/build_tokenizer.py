"""Build the small offline CLIP tokenizer fixture in ``mfexp/assets/clip_tokenizer/``.

    python -m mfexp.toyworld.build_tokenizer [--out DIR] [--vocab-size N]

CLIP's format: the vocabulary starts with the 256 byte-level characters (GPT-2's ``bytes_to_unicode``), then the
same 256 with the end-of-word marker ``</w>``, then one entry per merge (in merge order), then ``<|startoftext|>``
and ``<|endoftext|>``. Every string tokenizes (each byte is in the base alphabet). The merges are learnt by a
small deterministic BPE on a weighted word list: the toy world's words get so much weight that each becomes one
token; a few hundred common English / LVIS-style object words follow, so unseen multi-token names split sensibly.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

# a few hundred common English words and LVIS-style object names (order = rough frequency, most common first)
COMMON_WORDS = """
a an the of and in on with to for at by from is are was it this that as or be one two three four five six some
photo image picture single small large big little old new red green blue yellow white black brown orange pink
purple grey gray gold silver dark light round flat square long short tall thin thick open closed full empty
person man woman boy girl child baby people car truck bus train bicycle bike motorcycle airplane plane boat ship
dog cat horse sheep cow bird duck chicken elephant bear zebra giraffe lion tiger monkey rabbit mouse fish frog
tree christmas flower plant grass leaf leaves fruit apple banana orange grape lemon cherry strawberry tomato potato
carrot broccoli onion pepper corn bread cake pizza sandwich donut cookie cheese egg meat soup salad rice
table chair bench sofa couch bed desk lamp door window wall floor roof house building tower bridge road street
sign light stop parking fire hydrant meter clock vase bottle cup glass mug bowl plate fork knife spoon pan pot
kettle teapot jar box bag backpack handbag suitcase umbrella hat cap helmet shoe boot sock shirt jacket coat dress
skirt tie scarf glove belt watch ring necklace bracelet earring glasses sunglasses mirror towel blanket pillow
curtain rug carpet book paper pen pencil scissors phone laptop computer keyboard screen television remote camera
radio speaker headphones toy doll ball kite skateboard surfboard ski snowboard racket bat frisbee tennis baseball
football basketball soccer toilet sink bathtub shower refrigerator oven microwave toaster stove fan heater
candle basket bucket barrel can tin tray shelf cabinet drawer hanger hook key lock chain rope wire pipe tube
wheel tire engine seat saddle flag banner poster statue fountain pole post fence gate stairs ladder tent
mountain hill river lake sea beach sand stone rock water snow ice sky cloud sun moon star heart cross circle
triangle hexagon diamond shape sides points plus symbol band hollow equal like piece part side top bottom front
back left right middle center edge corner line stripe dot pattern color colour wooden metal plastic glass paper
cloth leather rubber made used holding wearing sitting standing covered filled shaped type kind sort device
container vessel tool utensil animal vehicle furniture food drink drinking eating cooking cutting writing worn
carrying attached hanging cover lid handle strap button pocket collar sleeve hood zipper buckle frame stand base
ornament decoration wreath garland bauble tinsel bow ribbon gift present card envelope stamp coin money wallet
""".split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _word_symbols(word: str, byte_encoder: dict[int, str]) -> tuple[str, ...]:
    chars = [byte_encoder[b] for b in word.encode("utf-8")]
    chars[-1] = chars[-1] + "</w>"
    return tuple(chars)


def _word_frequencies() -> dict[str, float]:
    from mfexp.toyworld.world import vocabulary_words

    freqs: dict[str, float] = {}
    for i, w in enumerate(COMMON_WORDS):
        w = w.lower()
        freqs[w] = max(freqs.get(w, 0.0), 1000.0 / (i + 10))  # Zipf-ish by list position
    for w in vocabulary_words():
        freqs[w.lower()] = 1e6  # the toy world's words must end up as whole tokens
    return freqs


def learn_merges(freqs: dict[str, float], max_merges: int) -> list[tuple[str, str]]:
    """Plain BPE: repeatedly merge the most frequent adjacent pair (ties broken lexicographically)."""
    byte_encoder = bytes_to_unicode()
    words = {w: list(_word_symbols(w, byte_encoder)) for w in sorted(freqs)}
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        counts: collections.Counter = collections.Counter()
        for w, syms in words.items():
            for a, b in zip(syms, syms[1:]):
                counts[(a, b)] += freqs[w]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        a, b = best
        for w, syms in words.items():
            i, out = 0, []
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[w] = out
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    base = list(bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base]
    seen = set(tokens)
    for a, b in merges:
        t = a + b
        if t not in seen:
            tokens.append(t)
            seen.add(t)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer",
    "model_max_length": 77,
    "do_lower_case": True,
    "errors": "replace",
    "add_prefix_space": False,
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "clean_up_tokenization_spaces": False,
}

SPECIAL_TOKENS_MAP = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}


def build_tokenizer(out_dir: str | os.PathLike, vocab_size: int = 4000) -> Path:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, ``special_tokens_map.json`` to ``out_dir``."""
    max_merges = vocab_size - 512 - 2
    if max_merges < 0:
        raise ValueError(f"vocab_size must be >= 514 (256 bytes x 2 + 2 specials), got {vocab_size}")
    merges = learn_merges(_word_frequencies(), max_merges)
    vocab = build_vocab(merges)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS_MAP, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    from mfexp.assets import tokenizer_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(tokenizer_path()), help="output folder (default: the packaged fixture)")
    p.add_argument("--vocab-size", type=int, default=4000)
    args = p.parse_args(argv)
    out = build_tokenizer(args.out, args.vocab_size)
    n = len(json.loads((out / "vocab.json").read_text(encoding="utf-8")))
    print(f"wrote CLIP tokenizer ({n} tokens) to {out}")


if __name__ == "__main__":
    main()
