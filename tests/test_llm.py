"""Loading the frozen LLM and its tokenizer: packaged GGUF cache, tiny-random, bad paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from flame_pipeline.config import EmbedConfig, load_profile
from flame_pipeline.text import llm

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def embed_cfg(**over) -> EmbedConfig:
    base = load_profile("tiny", PARAMS).embed
    return base.model_copy(update=over)


def test_tokenizer_from_packaged_gguf_is_cached():
    tok = llm.load_tokenizer(embed_cfg(llm="smollm2-135m"))
    cached = llm.cache_root() / "smollm2-135m" / "tokenizer"
    assert (cached / "tokenizer.json").is_file()
    ids = tok("a red square", add_special_tokens=False).input_ids
    assert len(ids) >= 3 and tok.decode(ids) == "a red square"
    assert len(tok) == 49152


def test_tiny_random_uses_the_smollm2_tokenizer():
    a = llm.load_tokenizer(embed_cfg(llm="tiny-random"))
    b = llm.load_tokenizer(embed_cfg(llm="smollm2-135m"))
    text = "two blue circles left of a green triangle"
    assert a(text).input_ids == b(text).input_ids


@pytest.mark.parametrize("name", ["/nonexistent/model.gguf", "./no/such/dir", "not a model"])
def test_missing_model_is_a_clear_error(name):
    with pytest.raises(llm.ModelNotFoundError, match="not found"):
        llm.load_tokenizer(embed_cfg(llm=name))
