"""Which prompt set a text query goes through (docs/METHOD.md#text-queries).

FLAME embeds a query through a prompt set of the frozen LLM; CLIP ignores the choice. A
benchmark's ``prompt_set`` setting names one (``single``, ``short``, ``long``) or leaves it to
these rules (``auto``): long captions the long set, short English captions the short set
(``eval.prompt_mode: multi``), class names and non-English captions the single prompt, as
do the multilingual benchmarks in every language.
"""
from __future__ import annotations


def caption_set(mode: str, language: str = "en") -> str:
    """The prompt set for a short caption: the single prompt for non-English text."""
    return "short" if mode == "multi" and language == "en" else "single"


def long_set(mode: str) -> str:
    return "long" if mode == "multi" else "single"


def query_set(choice: str, mode: str, language: str = "en", long: bool = False) -> str:
    """``choice`` when it names a set, else (``auto``) the set the rules above give."""
    if choice != "auto":
        return choice
    return long_set(mode) if long and language == "en" else caption_set(mode, language)


def single_set(choice: str) -> str:
    """``choice``, or (``auto``) the single prompt: class names, multilingual captions."""
    return "single" if choice == "auto" else choice
