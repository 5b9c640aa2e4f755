import pytest

from mfexp.assets import load_tokenizer
from mfexp.lvis import load_categories, select_categories
from mfexp.mosaicfusion.prompts import PromptError, display_name, object_token_index, region_prompt


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_categories_and_groups(categories_file):
    cats = load_categories(categories_file)
    assert [c["name"] for c in select_categories(cats, ["r"], "main_frequency")] == [
        "apple",
        "bat_(animal)",
        "christmas_tree",
        "red_circle",
    ]
    assert len(select_categories(cats, ["r", "c", "f"], "mixed_frequency")) == 8
    with pytest.raises(ValueError, match="selects no category"):
        select_categories([c for c in cats if c["frequency"] != "f"], ["f"], "main_frequency")
    with pytest.raises(ValueError, match="unknown frequency"):
        select_categories(cats, ["x"], "main_frequency")


def test_bad_category_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_categories(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_categories(tmp_path / "bad.json")
    (tmp_path / "nofreq.json").write_text('{"categories": [{"id": 1, "name": "x"}]}')
    with pytest.raises(ValueError, match="lacks"):
        load_categories(tmp_path / "nofreq.json")


def test_prompt_template():
    cat = {"name": "christmas_tree", "def": "an ornamented evergreen"}
    assert (
        region_prompt("a photo of a single {name}, {def}", cat)
        == "a photo of a single christmas tree, an ornamented evergreen"
    )
    assert region_prompt("a photo of a single {name}, {def}", {"name": "dog", "def": ""}) == "a photo of a single dog"
    with pytest.raises(ValueError, match="unknown field"):
        region_prompt("{colour}", cat)


def test_object_token_is_last_subword_of_name(tok):
    prompt = "a photo of a single christmas tree, an ornamented evergreen used as a tree"
    ids = tok(prompt).input_ids
    i = object_token_index(tok, prompt, "christmas tree")
    assert ids[i] == tok("tree", add_special_tokens=False).input_ids[-1]
    # the first occurrence, right after "christmas"
    assert (
        ids[i - len(tok("christmas", add_special_tokens=False).input_ids)]
        == tok("christmas", add_special_tokens=False).input_ids[0]
    )
    # parenthesised disambiguation: ")" stripped, last token of "animal"
    p = region_prompt("a photo of a single {name}, {def}", {"name": "bat_(animal)", "def": "nocturnal mammal"})
    j = object_token_index(tok, p, display_name({"name": "bat_(animal)"}))
    assert tok.decode([tok(p).input_ids[j]]).strip() in ("animal", "l", "al", "mal", "imal")
    assert tok(p).input_ids[j] == tok("animal", add_special_tokens=False).input_ids[-1]


def test_token_errors(tok):
    with pytest.raises(PromptError, match="no tokens"):
        object_token_index(tok, "a photo", "()")
    with pytest.raises(PromptError, match="not in the prompt"):
        object_token_index(tok, "a photo of a single dog", "zebra")
    long = "a photo of " + "very " * 100 + "red circle"
    with pytest.raises(PromptError, match="context"):
        object_token_index(tok, long, "red circle")
