"""Caption normalisation: the FLAME reference rules, for one string and for a Polars column.

Rules, applied in this order (docs/METHOD.md#captions):
1. every run of Unicode whitespace becomes one space, and the ends are stripped;
2. ``"`` becomes ``'`` (the prompt templates quote the caption with ``"``);
3. a final ``?`` becomes ``.`` (a final full-width ``？`` becomes ``。``);
4. a non-empty caption that does not end in end punctuation (``. ! ? … 。 ！ ？``) gets a final ``.``.

``normalise_caption`` (one string, used by the embedding stage for ad-hoc text) and
``normalise_expr`` (a vectorised Polars expression, used by curation) are built from the
same constants below; a test checks that they agree.
"""
from __future__ import annotations

import re

import polars as pl

# The Unicode White_Space property, spelled out: Python's ``\s`` and the Rust regex ``\s``
# that Polars uses disagree on a few control characters, an explicit class does not.
WHITESPACE = r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
END_PUNCT = ".!?…。！？"
QUESTION_MARKS = {"?": ".", "？": "。"}  # final question mark -> the full stop of its script

_WHITESPACE_RE = re.compile(WHITESPACE)


def normalise_caption(text: str) -> str:
    """Apply the caption rules to one string (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be str, got {type(text).__name__}")
    text = _WHITESPACE_RE.sub(" ", text).strip(" ")
    text = text.replace('"', "'")
    if not text:
        return text
    last = text[-1]
    if last in QUESTION_MARKS:
        return text[:-1] + QUESTION_MARKS[last]
    if last not in END_PUNCT:
        return text + "."
    return text


def normalise_expr(expr: pl.Expr) -> pl.Expr:
    """The same rules as a Polars string expression (nulls stay null)."""
    out = (expr.str.replace_all(WHITESPACE, " ")
               .str.strip_chars(" ")
               .str.replace_all('"', "'", literal=True))
    for mark, stop in QUESTION_MARKS.items():
        out = out.str.replace(re.escape(mark) + "$", stop)
    missing = f"([^{re.escape(END_PUNCT)}])$"
    return out.str.replace(missing, "${1}.")
