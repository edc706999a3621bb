"""Loading the frozen LLM text encoder: the model on its device and dtype, its final norm and
output embedding (how the token map reads a hidden state) and its hidden size. Which files
``embed.llm`` names, the conversion cache and the tokenizer are ``flame_pipeline/llm_files.py``'s.

The loaded model is frozen (``requires_grad=False``) and in eval mode; it is only ever run
under ``torch.inference_mode``.
"""
from __future__ import annotations

import importlib.util

import torch

from flame_pipeline.config import EmbedConfig
from flame_pipeline.distributed import device as this_device, launched_world
from flame_pipeline.llm_files import TINY_SHAPE, convert, gguf_record, load_tokenizer, resolve


def _tiny_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, **TINY_SHAPE)


def device_and_dtype(embed_cfg: EmbedConfig) -> tuple[torch.device, torch.dtype]:
    """CUDA when present (torchrun's LOCAL_RANK picks the GPU). ``auto`` is bf16 on a
    bf16-capable GPU and fp32 on CPU: in bf16 the one-pass vs alone equality on SmolLM2 reaches
    only cosine 0.9998 (tests/test_facets.py), short of the fp32 contract's 0.9999."""
    device = this_device()
    gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if embed_cfg.dtype == "bf16" or (embed_cfg.dtype == "auto" and gpu_bf16):
        return device, torch.bfloat16
    return device, torch.float32


def placement(embed_cfg: EmbedConfig, where, device: torch.device, dtype: torch.dtype) -> dict:
    """``from_pretrained``'s arguments for ``embed.quantization`` and ``embed.device_map``
    (docs/GPU.md#large-llms): none for neither, and the loaded model is then moved to
    ``device``; else from_pretrained places the weights itself."""
    options: dict = {}
    if embed_cfg.device_map is not None:
        if launched_world() > 1:
            raise ValueError(f"embed.device_map={embed_cfg.device_map!r} shards the LLM over every "
                             f"GPU of one process, but torchrun started {launched_world()} processes, "
                             "each with a GPU of its own: run the stage as one process, or set "
                             "embed.device_map: null")
        options["device_map"] = embed_cfg.device_map
    if embed_cfg.quantization == "none":
        return options
    what = f"embed.quantization={embed_cfg.quantization!r}"
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModuleNotFoundError(f"{what} needs bitsandbytes: pip install 'flame-pipeline[gpu]'")
    if device.type != "cuda":
        raise ValueError(f"{what} runs on CUDA GPUs, and this process has none: set "
                         "embed.quantization: none")
    from transformers import AutoConfig, BitsAndBytesConfig

    made = getattr(AutoConfig.from_pretrained(where), "quantization_config", None)
    if made is not None:
        method = made.get("quant_method") if isinstance(made, dict) else made.quant_method
        raise ValueError(f"{what}: {embed_cfg.llm} is stored quantized already ({method}); "
                         "set embed.quantization: none to load it as it is")
    options["quantization_config"] = BitsAndBytesConfig(
        load_in_8bit=embed_cfg.quantization == "8bit", load_in_4bit=embed_cfg.quantization == "4bit",
        bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    options.setdefault("device_map", {"": str(device)})
    return options


def load_llm(embed_cfg: EmbedConfig):
    """``(model, tokenizer)``: the frozen base model (no LM head), eval mode, SDPA attention,
    on ``device_and_dtype(embed_cfg)`` (or where ``placement`` puts it)."""
    from transformers import AutoModel

    device, dtype = device_and_dtype(embed_cfg)
    tokenizer = load_tokenizer(embed_cfg)
    src = resolve(embed_cfg.llm)
    placed: dict = {}
    if src.kind == "tiny":   # the config rules out quantization and device_map here
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(embed_cfg.init_seed)
            model = AutoModel.from_config(_tiny_config(tokenizer), attn_implementation="sdpa",
                                          dtype=dtype)
    else:
        if src.kind in ("packaged", "gguf"):   # quantization re-quantizes the dequantized copy
            where = convert(src, "model", lambda d, f: AutoModel.from_pretrained(
                d, gguf_file=f, dtype=torch.float32))
        else:
            where = src.path or src.name
        placed = placement(embed_cfg, where, device, dtype)
        model = AutoModel.from_pretrained(where, dtype=dtype, attn_implementation="sdpa", **placed)
    model.requires_grad_(False)
    if not placed:   # a quantized or device_map model is placed already (and refuses .to)
        model = model.to(device)
    return model.eval(), tokenizer


def output_embedding(embed_cfg: EmbedConfig, model) -> torch.Tensor:
    """The LLM's output embedding (LM head) [vocab, d], float32 on the CPU: ``model``'s input
    embeddings where the head is tied to them; else the GGUF's ``output.weight``, dequantised
    (Qwen2.5's GGUF has its own), or a checkpoint's causal-LM head. ``model`` is the base model
    ``load_llm`` returns, which has no head of its own."""
    if getattr(model.config, "tie_word_embeddings", False):
        return model.get_input_embeddings().weight.detach().float().cpu()
    src = resolve(embed_cfg.llm)
    if src.kind in ("packaged", "gguf"):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        tensors = {t.name: t for t in GGUFReader(gguf_record(src)["gguf"]).tensors}
        if "output.weight" not in tensors:
            raise ValueError(f"{embed_cfg.llm}: the LM head is not tied to the input embeddings "
                             "and the GGUF has no output.weight")
        head = tensors["output.weight"]
        return torch.from_numpy(dequantize(head.data, head.tensor_type).copy()).float()
    if src.kind == "tiny":
        raise ValueError("tiny-random: an untied LM head is never initialised")
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(src.path) if src.path else src.name,
                                              dtype=torch.float32)
    return lm.get_output_embeddings().weight.detach().float()


def final_norm(model) -> torch.nn.Module:
    """A float32 CPU copy of the LLM's final norm (the one before its LM head), which the token
    map applies to a hidden state as the LLM does; ``model`` is the base model ``load_llm``
    returns (Llama, Qwen2 and Gemma 3 name it ``norm``)."""
    import copy

    from accelerate.hooks import remove_hook_from_module

    norm = getattr(model, "norm", None)
    if not isinstance(norm, torch.nn.Module):
        raise ValueError(f"{type(model).__name__} has no final norm named 'norm'")
    # under embed.device_map the norm has accelerate's hook, which moves inputs to its GPU
    return remove_hook_from_module(copy.deepcopy(norm)).float().cpu().eval()


def hidden_size(embed_cfg: EmbedConfig) -> int:
    """The LLM's hidden size, from its config or GGUF header; the weights are not loaded."""
    src = resolve(embed_cfg.llm)
    if src.kind == "tiny":
        return int(TINY_SHAPE["hidden_size"])
    if src.kind in ("dir", "hub"):
        from transformers import AutoConfig
        return int(AutoConfig.from_pretrained(str(src.path) if src.path else src.name).hidden_size)
    from gguf import GGUFReader

    reader = GGUFReader(gguf_record(src)["gguf"])
    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    field = reader.fields[f"{arch}.embedding_length"]
    return int(field.parts[field.data[0]][0])
