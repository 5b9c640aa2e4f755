"""Region prompts and the object token (pure functions); categories and their frequency groups: mfexp.lvis."""

from __future__ import annotations

import re


class PromptError(ValueError):
    """A prompt whose object token cannot be located: the mosaic is skipped with this reason."""


def display_name(category: dict) -> str:
    """LVIS name as words: underscores -> spaces, the parenthesised disambiguation kept ("bat_(animal)")."""
    return category["name"].replace("_", " ").strip()


def region_prompt(template: str, category: dict) -> str:
    definition = (category.get("def") or "").strip()
    try:
        prompt = template.format(name=display_name(category), **{"def": definition})
    except (KeyError, IndexError) as e:
        raise ValueError(f"generator.prompt {template!r}: unknown field {e}; use {{name}} and {{def}}") from None
    return re.sub(r"\s+", " ", prompt).strip(" ,")


def object_token_index(tokenizer, prompt: str, name: str) -> int:
    """Position (in the padded input ids, BOS included) of the last sub-word token of `name` in `prompt`.

    The name's tokens are matched at their first occurrence in the prompt; `)` is stripped first
    ("bat (animal)" -> "animal"). Raises PromptError when the name has no tokens, is not in the prompt, or falls
    past the text encoder's context length.
    """
    clean = re.sub(r"[()]", " ", name).strip()
    name_ids = tokenizer(clean, add_special_tokens=False).input_ids if clean else []
    if not name_ids:
        raise PromptError(f"category name {name!r} has no tokens")
    ids = tokenizer(prompt, add_special_tokens=True).input_ids
    n = len(name_ids)
    for start in range(len(ids) - n + 1):
        if ids[start : start + n] == name_ids:
            index = start + n - 1
            break
    else:
        if name_ids[-1] not in ids:
            raise PromptError(f"the object token of {name!r} is not in the prompt {prompt!r}")
        index = ids.index(name_ids[-1])
    if index >= tokenizer.model_max_length - 1:
        raise PromptError(f"the object token of {name!r} falls past the {tokenizer.model_max_length}-token context")
    return index
