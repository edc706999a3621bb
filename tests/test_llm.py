"""The frozen LLM's files and tokenizer (llm_files) and loading the model (text.llm): packaged
GGUF cache, tiny-random, bad paths."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from flame_pipeline.config import EmbedConfig, load_profile
from flame_pipeline import llm_files
from flame_pipeline.text import llm

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def embed_cfg(**over) -> EmbedConfig:
    base = load_profile("tiny", PARAMS).embed
    return base.model_copy(update=over)


def test_tokenizer_from_packaged_gguf_is_cached():
    tok = llm_files.load_tokenizer(embed_cfg(llm="smollm2-135m"))
    cached = llm_files.cache_root() / "smollm2-135m" / "tokenizer"
    assert (cached / "tokenizer.json").is_file()
    ids = tok("a red square", add_special_tokens=False).input_ids
    assert len(ids) >= 3 and tok.decode(ids) == "a red square"
    assert len(tok) == 49152


def test_tiny_random_uses_the_smollm2_tokenizer():
    a = llm_files.load_tokenizer(embed_cfg(llm="tiny-random"))
    b = llm_files.load_tokenizer(embed_cfg(llm="smollm2-135m"))
    text = "two blue circles left of a green triangle"
    assert a(text).input_ids == b(text).input_ids


@pytest.mark.parametrize("name", ["/nonexistent/model.gguf", "./no/such/dir", "not a model"])
def test_missing_model_is_a_clear_error(name):
    with pytest.raises(llm_files.ModelNotFoundError, match="not found"):
        llm_files.load_tokenizer(embed_cfg(llm=name))


def test_load_llm_is_frozen_in_eval_mode_and_seeded():
    model, tok = llm.load_llm(embed_cfg(llm="tiny-random", dtype="fp32"))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.config._attn_implementation == "sdpa" and model.config.hidden_size == 64
    again, _ = llm.load_llm(embed_cfg(llm="tiny-random", dtype="fp32"))
    other, _ = llm.load_llm(embed_cfg(llm="tiny-random", dtype="fp32", init_seed=1))
    w = model.embed_tokens.weight
    assert torch.equal(w, again.embed_tokens.weight) and not torch.equal(w, other.embed_tokens.weight)
    bf16, _ = llm.load_llm(embed_cfg(llm="tiny-random", dtype="bf16"))
    assert bf16.embed_tokens.weight.dtype == torch.bfloat16


def test_identity_names_the_weights():
    tiny = llm_files.llm_identity(embed_cfg(llm="tiny-random"))
    assert tiny != llm_files.llm_identity(embed_cfg(llm="tiny-random", init_seed=1))
    smol = llm_files.llm_identity(embed_cfg(llm="smollm2-135m"))
    assert len(smol["weights"]) == 64 and tiny["tokenizer"] == smol["weights"]


@pytest.mark.slow
def test_a_gguf_file_is_converted_once_to_a_cached_safetensors_copy(tmp_path, monkeypatch):
    gguf = llm_files.PACKAGED["smollm2-135m"](tmp_path)
    monkeypatch.setenv("FLAME_CACHE", str(tmp_path / "cache"))
    cfg = embed_cfg(llm=str(gguf), dtype="fp32")
    model, _ = llm.load_llm(cfg)
    copies = list((tmp_path / "cache").rglob("model.safetensors"))
    assert len(copies) == 1 and model.config.hidden_size == 576
    stamp = copies[0].stat().st_mtime_ns
    start = time.perf_counter()
    again, _ = llm.load_llm(cfg)
    assert time.perf_counter() - start < 15 and copies[0].stat().st_mtime_ns == stamp
    assert torch.equal(model.layers[3].mlp.up_proj.weight, again.layers[3].mlp.up_proj.weight)
    assert not any(p.requires_grad for p in again.parameters())
