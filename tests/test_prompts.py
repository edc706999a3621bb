"""Prompt sets as data: token layout, caption normalisation, and bad prompt sets."""
from __future__ import annotations

from pathlib import Path

import pytest

from flame_pipeline.config import PromptSet, load_profile
from flame_pipeline.llm_files import load_tokenizer
from flame_pipeline.text.prompts import EmptyCaptionError, PromptBuilder, prepare_caption

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(load_profile("tiny", PARAMS).embed)


def test_layout_is_lead_before_caption_after_then_facets(tok):
    sets = {"two": PromptSet(prefix='Say "{caption}" now', facets=[" one:", " two words:"])}
    built = PromptBuilder(tok, sets, max_tokens=50).build("a red cube.", "two")
    ids = lambda t: tok(t, add_special_tokens=False).input_ids  # noqa: E731
    assert built.prefix == tok("").input_ids + ids('Say "') + ids("a red cube.") + ids('" now')
    assert built.facets == [ids(" one:"), ids(" two words:")] and not built.truncated
    assert built.n_tokens == len(built.prefix) + sum(map(len, built.facets))


def test_caption_normalisation_follows_the_method(tok):
    assert prepare_caption('  a "big"   dog?') == "a 'big' dog."
    assert prepare_caption("a cat") == "a cat."
    with pytest.raises(EmptyCaptionError):
        prepare_caption(" \n ")


@pytest.mark.parametrize("prefix,facets,match", [
    ("no placeholder", [" x"], "exactly once"),
    ("{caption} and {caption}", [" x"], "exactly once"),
    ("{caption}", [], "non-empty"),
    ("{caption}", [""], "non-empty")])
def test_bad_prompt_sets_are_named(tok, prefix, facets, match):
    with pytest.raises(ValueError, match=rf"prompt_sets\.bad.*{match}"):
        PromptBuilder(tok, {"bad": PromptSet(prefix=prefix, facets=facets)}, 16)


def test_unknown_prompt_set_is_named(tok):
    builder = PromptBuilder(tok, load_profile("tiny", PARAMS).embed.prompt_sets, 16)
    with pytest.raises(KeyError, match="nope"):
        builder.build("a cat.", "nope")
