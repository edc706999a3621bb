"""Which prompt set embeds a text query (docs/METHOD.md#text-queries).

The evaluate stage knows what each text is: a short English caption goes through ``short``, a
long caption through ``long``, a class name or a non-English caption through ``single``
(``eval.prompt_mode: single`` puts everything through ``single``). ``flame benchmark`` reads
texts it knows nothing about, so ``auto`` tells them apart by their look, the same way:

1. a text whose language is not English: ``single``;
2. a long text, more than ``curate.long_tokens`` LLM tokens or more than one sentence: ``long``;
3. a label, at most ``LABEL_WORDS`` words without a sentence end (a class name): ``single``;
4. any other text: ``short``.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np

PROMPT_SETS = ("auto", "single", "short", "long")   # the choices of ``flame benchmark --prompt-set``
LABEL_WORDS = 3
_SENTENCE_END = re.compile(r"[.!?…。！？](?=\s|$)")


def english(language: str) -> bool:
    return language.split("-")[0].lower() == "en"


def caption_set(mode: str, language: str = "en") -> str:
    """The prompt set for a short caption: the single prompt for non-English text."""
    return "short" if mode == "multi" and english(language) else "single"


def long_set(mode: str) -> str:
    return "long" if mode == "multi" else "single"


def query_set(choice: str, mode: str, language: str = "en", long: bool = False) -> str:
    """``choice`` when it names a set, else (``auto``) the set of a known text: ``long`` for a long
    English caption, else ``caption_set``'s. (``auto_set`` guesses for texts of unknown kind.)"""
    if choice != "auto":
        return choice
    return long_set(mode) if long and english(language) else caption_set(mode, language)


def single_set(choice: str) -> str:
    """``choice``, or (``auto``) the single prompt: class names, multilingual captions."""
    return "single" if choice == "auto" else choice


def auto_set(text: str, language: str, n_tokens: int, long_tokens: int, mode: str = "multi") -> str:
    """The rule of the module docstring for one text of ``n_tokens`` LLM tokens."""
    if mode == "single" or not english(language):
        return "single"
    text = text.strip()
    if n_tokens > long_tokens or len(_SENTENCE_END.findall(text)) > 1:
        return long_set(mode)
    if len(text.split()) <= LABEL_WORDS and not _SENTENCE_END.search(text):
        return "single"
    return caption_set(mode, language)


def encode_by_set(encode: Callable[[list[str], str], np.ndarray], texts: list[str],
                  sets: list[str]) -> np.ndarray:
    """``encode(texts, prompt set)`` once per set, the rows put back in the order of ``texts``."""
    out: np.ndarray | None = None
    for name in sorted(set(sets)):
        idx = [i for i, s in enumerate(sets) if s == name]
        emb = encode([texts[i] for i in idx], name)
        if out is None:
            out = np.zeros((len(texts), emb.shape[1]), dtype=emb.dtype)
        out[idx] = emb
    if out is None:
        raise ValueError("encode_by_set: no texts")
    return out
