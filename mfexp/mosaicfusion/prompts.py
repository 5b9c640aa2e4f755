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


def object_token_index(tokenizer, prompt: str, name: str, max_length: int | None = None) -> int:
    """Position (in the padded input ids, special tokens included) of the last sub-word token of `name` in `prompt`.

    Works for CLIP (BPE, BOS first) and T5 (SentencePiece, no BOS, EOS last) tokenizers. The name's tokens are
    matched at their first occurrence in the prompt; `)` is stripped first ("bat (animal)" -> "animal"). When the
    ids of the name alone are not in the prompt's ids (SentencePiece marks a word start differently after "("), a
    fast tokenizer's character offsets locate the token that ends the name's last word. Raises PromptError when the
    name has no tokens, is not in the prompt, or falls past the context (`max_length`, by default the
    tokenizer's `model_max_length`; the last position is kept for the end token).
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
        if name_ids[-1] in ids:
            index = ids.index(name_ids[-1])
        else:
            found = _offset_token_index(tokenizer, prompt, clean)
            if found is None:
                raise PromptError(f"the object token of {name!r} is not in the prompt {prompt!r}")
            index = found
    limit = int(tokenizer.model_max_length if max_length is None else max_length)
    if index >= limit - 1:
        raise PromptError(f"the object token of {name!r} falls past the {limit}-token context")
    return index


def _offset_token_index(tokenizer, prompt: str, clean_name: str) -> int | None:
    """Index of the token whose character span ends the last word of `clean_name` at its first occurrence in
    `prompt` (words matched case-insensitively, any separators between them); None without offsets or a match."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    words = clean_name.split()
    m = re.search(r"[^\w]+".join(re.escape(w) for w in words), prompt, flags=re.IGNORECASE)
    if m is None:
        return None
    end = m.end()
    offsets = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True).offset_mapping
    for i, (a, b) in enumerate(offsets):
        if a < end <= b:
            return i
    return None
