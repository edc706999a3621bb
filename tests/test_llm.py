"""The frozen LLM's files and tokenizer (llm_files) and loading the model (text.llm): packaged
GGUF cache, tiny-random, bad paths."""
from __future__ import annotations

import importlib.util
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


@pytest.fixture
def pretend_bitsandbytes(monkeypatch):
    """``find_spec`` as if bitsandbytes were (``present``) or were not installed."""
    real = importlib.util.find_spec

    def fake(present: bool):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
            (real("torch") if present else None) if name == "bitsandbytes" else real(name, *a)))
    return fake


def test_quantization_needs_bitsandbytes_then_cuda(pretend_bitsandbytes):
    cfg = embed_cfg(llm="smollm2-135m", quantization="8bit")
    pretend_bitsandbytes(False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'flame-pipeline\[gpu\]'"):
        llm.placement(cfg, "unused", torch.device("cuda", 0), torch.bfloat16)
    pretend_bitsandbytes(True)
    with pytest.raises(ValueError, match="runs on CUDA GPUs, and this process has none"):
        llm.placement(cfg, "unused", torch.device("cpu"), torch.float32)


def test_quantization_refuses_weights_stored_quantized(tmp_path, pretend_bitsandbytes):
    from transformers import LlamaConfig
    LlamaConfig(**llm_files.TINY_SHAPE, quantization_config={"quant_method": "gptq", "bits": 4}
                ).save_pretrained(tmp_path)
    pretend_bitsandbytes(True)
    with pytest.raises(ValueError, match=r"stored quantized already \(gptq\)"):
        llm.placement(embed_cfg(llm=str(tmp_path), quantization="4bit"), tmp_path,
                      torch.device("cuda", 0), torch.bfloat16)


def test_device_map_is_one_process_sharding(monkeypatch):
    cfg = embed_cfg(llm="smollm2-135m", device_map="auto")
    assert llm.placement(cfg, "unused", torch.device("cpu"), torch.float32) == {"device_map": "auto"}
    assert llm.placement(embed_cfg(llm="smollm2-135m"), "unused", torch.device("cpu"),
                         torch.float32) == {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="torchrun started 2 processes"):
        llm.placement(cfg, "unused", torch.device("cpu"), torch.float32)


def test_quantization_options_for_bitsandbytes(tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import LlamaConfig
    LlamaConfig(**llm_files.TINY_SHAPE).save_pretrained(tmp_path)
    options = llm.placement(embed_cfg(llm=str(tmp_path), quantization="4bit"), tmp_path,
                            torch.device("cuda", 1), torch.bfloat16)
    q = options["quantization_config"]
    assert options["device_map"] == {"": "cuda:1"}
    assert (q.load_in_4bit, q.load_in_8bit, q.bnb_4bit_quant_type) == (True, False, "nf4")
    assert q.bnb_4bit_compute_dtype == torch.bfloat16


def test_device_map_loads_the_same_vectors_under_another_cache_key(tmp_path):
    """A model directory loaded with ``device_map: auto`` (here all on the CPU) embeds as the
    plain load does; the option enters the fingerprint, the defaults do not."""
    from flame_pipeline.text.cache import CACHE_VERSION, content_hash, model_fingerprint
    from flame_pipeline.text.facets import facet_embeddings
    from flame_pipeline.text.prompts import PromptBuilder, prepare_caption

    tiny, tok = llm.load_llm(embed_cfg(llm="tiny-random", dtype="fp32"))
    tiny.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    plain_cfg = embed_cfg(llm=str(tmp_path), dtype="fp32")
    sharded_cfg = embed_cfg(llm=str(tmp_path), dtype="fp32", device_map="auto")
    rows = [PromptBuilder(tok, plain_cfg.prompt_sets, plain_cfg.max_tokens).build(
        prepare_caption("a red square"), "long")]
    vectors = [facet_embeddings(llm.load_llm(c)[0], rows, c.layer) for c in (plain_cfg, sharded_cfg)]
    assert torch.equal(vectors[0][0], vectors[1][0])
    old_key = content_hash({"v": CACHE_VERSION, "llm": llm_files.llm_identity(plain_cfg), "layer": -2,
                            "dtype": "torch.float32", "max_tokens": plain_cfg.max_tokens})[:16]
    assert model_fingerprint(plain_cfg) == old_key != model_fingerprint(sharded_cfg)
    averaged = plain_cfg.model_copy(update={"layer": [-2, -3]})
    assert len({model_fingerprint(c) for c in (plain_cfg, sharded_cfg, averaged,
                                               embed_cfg(llm=str(tmp_path), dtype="fp32",
                                                         quantization="8bit"))}) == 4


def test_final_norm_drops_the_device_map_hook():
    """A sharded model's norm carries accelerate's hook, which would move the token map's CPU
    inputs to the norm's GPU: the copy has none and computes as the plain norm."""
    from accelerate.hooks import ModelHook, add_hook_to_module

    class ToMeta(ModelHook):   # stands in for a GPU this machine lacks
        def pre_forward(self, module, *args, **kwargs):
            return tuple(a.to("meta") for a in args), kwargs

    model, _ = llm.load_llm(embed_cfg(llm="tiny-random", dtype="fp32"))
    x = torch.randn(3, model.config.hidden_size)
    want = llm.final_norm(model)(x)
    add_hook_to_module(model.norm, ToMeta())
    with pytest.raises(RuntimeError, match="meta"):
        model.norm(x)
    got = llm.final_norm(model)(x)
    assert got.device.type == "cpu" and torch.equal(got, want)
