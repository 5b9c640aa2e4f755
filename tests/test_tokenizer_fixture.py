"""The offline CLIP tokenizer fixture (mfexp/assets/clip_tokenizer)."""

import json

import pytest

from mfexp.assets import tokenizer_path

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok():
    return transformers.CLIPTokenizer.from_pretrained(str(tokenizer_path()))


def test_files_present_and_small():
    d = tokenizer_path()
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (d / f).is_file(), f
    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) <= 4000
    assert list(vocab)[-2:] == ["<|startoftext|>", "<|endoftext|>"]


def test_round_trip_and_whole_words(tok):
    text = "a photo of a single red circle"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(ids) == 2 + len(text.split())  # each word is one token
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_toy_world_words_are_single_tokens(tok):
    from mfexp.toyworld.world import vocabulary_words

    for w in vocabulary_words():
        assert len(tok(w).input_ids) == 3, w


def test_any_string_tokenizes(tok):
    for text in ("christmas tree", "bass_(fish)", "zyzzyva 🍕 Ünïcode", "aerosol can"):
        ids = tok(text).input_ids
        assert len(ids) > 2
        assert tok.unk_token_id not in ids[1:-1]
    assert tok.convert_ids_to_tokens(tok("christmas tree").input_ids)[-2] == "tree</w>"


def test_padding_to_77(tok):
    out = tok(
        ["a photo of a single blue star", ""], padding="max_length", max_length=tok.model_max_length, truncation=True
    )
    assert all(len(x) == 77 for x in out.input_ids)


def test_build_is_deterministic(tmp_path):
    from mfexp.toyworld.build_tokenizer import build_tokenizer

    build_tokenizer(tmp_path)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / f).read_bytes() == (tokenizer_path() / f).read_bytes(), f
