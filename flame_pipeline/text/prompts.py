"""Prompt sets as token sequences: a shared prefix around the caption, then the facet prompts.

A prompt set (``embed.prompt_sets.<name>`` in params.yaml) is a ``prefix`` holding the
literal ``{caption}`` once and a list of ``facets``. The prefix is tokenised in three pieces
(the text before the caption, the caption, the text after it) so that a caption longer than
``embed.max_tokens`` loses only its own last tokens, never prompt text, and says so
(``truncated``). Facets are tokenised on their own, with no special tokens: each facet
continues the prefix.
"""
from __future__ import annotations

from dataclasses import dataclass

from flame_pipeline.config import PromptSet
from flame_pipeline.captions import normalise_caption

PLACEHOLDER = "{caption}"


class EmptyCaptionError(ValueError):
    """A caption with no text left after normalisation."""


@dataclass(frozen=True)
class PromptTokens:
    prefix: list[int]          # leading special tokens + prompt text + caption tokens
    facets: list[list[int]]    # one token list per facet, each continuing the prefix
    truncated: bool            # the caption lost tokens to ``max_tokens``

    @property
    def n_tokens(self) -> int:
        """Tokens of the one-pass sequence: |P| + sum |Fk|."""
        return len(self.prefix) + sum(len(f) for f in self.facets)


def prepare_caption(text: str) -> str:
    """The normalised caption (docs/METHOD.md#captions); an empty one is an error."""
    out = normalise_caption(text)
    if not out:
        raise EmptyCaptionError(f"empty caption: {text!r} has no text to embed")
    return out


@dataclass(frozen=True)
class _Template:
    before: list[int]
    after: list[int]
    facets: list[list[int]]


class PromptBuilder:
    """Turns (caption, prompt set name) into ``PromptTokens`` with one tokenizer."""

    def __init__(self, tokenizer, prompt_sets: dict[str, PromptSet], max_tokens: int):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.lead = tokenizer("", add_special_tokens=True).input_ids  # e.g. BOS, or nothing
        self._sets = {name: self._template(name, ps) for name, ps in prompt_sets.items()}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    def _template(self, name: str, ps: PromptSet) -> _Template:
        if ps.prefix.count(PLACEHOLDER) != 1:
            raise ValueError(f"embed.prompt_sets.{name}.prefix must contain {PLACEHOLDER} "
                             f"exactly once: {ps.prefix!r}")
        if not ps.facets or not all(ps.facets):
            raise ValueError(f"embed.prompt_sets.{name}.facets must be non-empty strings")
        before, after = ps.prefix.split(PLACEHOLDER)
        return _Template(self.lead + self._ids(before), self._ids(after),
                         [self._ids(f) for f in ps.facets])

    def template(self, prompt_set: str) -> _Template:
        if prompt_set not in self._sets:
            raise KeyError(f"unknown prompt set {prompt_set!r}; embed.prompt_sets has "
                           f"{sorted(self._sets)}")
        return self._sets[prompt_set]

    def max_length(self) -> int:
        """The longest position any built sequence can reach: |P| + max |Fk| at full caption."""
        return max(len(t.before) + self.max_tokens + len(t.after) + max(map(len, t.facets))
                   for t in self._sets.values())

    def build(self, caption: str, prompt_set: str) -> PromptTokens:
        """Tokens for an already normalised caption (see ``prepare_caption``)."""
        t = self.template(prompt_set)
        ids = self._ids(caption)
        if not ids:
            raise EmptyCaptionError(f"empty caption: {caption!r} has no tokens")
        truncated = len(ids) > self.max_tokens
        return PromptTokens(t.before + ids[: self.max_tokens] + t.after, t.facets, truncated)
