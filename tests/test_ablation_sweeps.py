"""The paper's remaining ablations as sweeps (centre jitter, prompt template, mixed-category set, images per
category), each with a toy-world and an lvis_ variant at the paper's values; every setting composes and resolves
to the setting it names."""

import pytest
from omegaconf import OmegaConf
from test_sweeps_report import compose_sweep, sweep_values

PAPER = {  # sweep -> (config key, the paper's settings as the config holds them)
    "jitter": ("generator.jitter", [[1 - r, 1 + r] for r in (0.25, 0.375, 0.5)]),
    "prompt": ("generator.prompt", ["{name}", "a photo of a single {name}", "a photo of a single {name}, {def}"]),
    "category_set": ("synthetic.mixed_frequency", [["r"], ["r", "c", "f"]]),
    "images_per_category": ("synthetic.images_per_category", [10, 25, 50]),
}


def value_of(cfg, key: str):
    """The resolved value under a dotted key, as plain Python."""
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def settings(name: str, base=()) -> list:
    cfg = compose_sweep(list(base) + [f"+sweep={name}"])
    key = PAPER[name.removeprefix("lvis_")][0]
    seen = []
    for combo in sweep_values(OmegaConf.to_container(cfg.hydra.sweeper.params)):
        run = compose_sweep(list(base) + [f"+sweep={name}"] + combo)
        value = value_of(run, key)
        if value not in seen:
            seen.append(value)
    return seen


@pytest.mark.parametrize("name", sorted(PAPER))
def test_toy_and_lvis_variants_sweep_the_papers_values(name):
    _, expected = PAPER[name]
    assert settings(name) == expected
    lvis = settings(f"lvis_{name}", ["experiment=lvis_mosaicfusion"])
    assert lvis == expected
    run = compose_sweep(["experiment=lvis_mosaicfusion", f"+sweep=lvis_{name}"])
    assert run.dataset.name == "lvis_v1" and run.generator.model.path == "CompVis/stable-diffusion-v1-4"


def test_defaults_are_rows_of_their_sweeps():
    """The default setting is one row of each sweep, so the default run can join the table."""
    cfg = compose_sweep([])
    for name, (key, expected) in PAPER.items():
        default = value_of(cfg, key)
        if name != "images_per_category":  # the toy default (10) is the paper's smallest row
            assert default in expected, name
    assert cfg.generator.jitter == [0.75, 1.25]  # the public code's range (r = 0.25 in the jitter sweep's reading)


def test_prompt_templates_keep_the_object_token_in_the_toy_world():
    """Every template of the prompt sweep, with the toy categories and tokenizer: the object token is found."""
    from mfexp.assets import load_tokenizer
    from mfexp.mosaicfusion.prompts import display_name, object_token_index, region_prompt
    from mfexp.toyworld.world import build_categories

    tokenizer = load_tokenizer()
    for template in PAPER["prompt"][1]:
        for category in build_categories():
            prompt = region_prompt(template, category)
            assert object_token_index(tokenizer, prompt, display_name(category)) > 0, prompt
