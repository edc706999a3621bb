"""The CLIP baseline: the train_baseline stage's recipe (a transformers ``CLIPModel`` trained
from scratch with InfoNCE, on the same train samples, steps, batch size and image tower sizes as
FLAME, through the same loop) and the finished model's files.

Text tower: ``baseline.text_layers`` x ``baseline.text_hidden_size`` (MLP 4x), a
``baseline.context_length``-token causal context; its joint embedding size is the text width.
Tokens: the embedding LLM's tokenizer (``llm_files.load_tokenizer``, no special tokens),
truncated to context - 1, then an end-of-text token with the id ``len(tokenizer)`` (one past
the tokenizer's vocabulary, so it is also the largest id, as in OpenAI CLIP); the text
feature is the EOT position's, which CLIPTextTransformer finds through ``eos_token_id``.

Caption per step: the sample's short caption; where the sample also has a long caption and the
embedding plan embeds long captions, the long one with probability ``LONG_CAPTION_P`` = 0.5
(drawn from the position's seeded generator), so the baseline sees the texts FLAME's embeddings
were made from, no more.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPVisionModelWithProjection

from flame_pipeline.config import Profile
from flame_pipeline.files import atomic_path
from flame_pipeline.llm_files import load_tokenizer
from flame_pipeline.paths import Paths
from flame_pipeline.stage import StageOutput
from flame_pipeline.train.check import check_rows, run_check
from flame_pipeline.train.checkpoint import CheckpointError
from flame_pipeline.train.data import TrainStream, local_batch
from flame_pipeline.train.loop import Recipe, identity_of, run
from flame_pipeline.train.loss import info_nce

LONG_CAPTION_P = 0.5
TOKENIZER = "tokenizer"


def clip_config(cfg: Profile, eot: int) -> CLIPConfig:
    v, b = cfg.vision, cfg.baseline
    if b.text_hidden_size % b.text_heads:
        raise ValueError(f"baseline.text_hidden_size {b.text_hidden_size} is not divisible by "
                         f"baseline.text_heads {b.text_heads}")
    text = dict(vocab_size=eot + 1, hidden_size=b.text_hidden_size,
                intermediate_size=4 * b.text_hidden_size, num_hidden_layers=b.text_layers,
                num_attention_heads=b.text_heads, max_position_embeddings=b.context_length,
                eos_token_id=eot, bos_token_id=eot, pad_token_id=0, projection_dim=b.text_hidden_size)
    vision = dict(hidden_size=v.hidden_size, intermediate_size=v.mlp_size, num_hidden_layers=v.layers,
                  num_attention_heads=v.heads, image_size=v.image_size, patch_size=v.patch_size,
                  projection_dim=b.text_hidden_size)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=b.text_hidden_size)


def tokenize(tokenizer, texts: list[str], context: int, eot: int) -> dict[str, torch.Tensor]:
    """Token ids [n, context] (caption tokens, EOT, zero padding) and the attention mask.
    Cut here, not by the tokenizer's ``truncation``: that would set the tokenizer's truncation
    state, which ``save_pretrained`` writes out, so a rerun that trains nothing would save a
    different ``tokenizer.json``."""
    pieces = [p[: context - 1] for p in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    ids = torch.zeros(len(pieces), context, dtype=torch.long)
    mask = torch.zeros(len(pieces), context, dtype=torch.long)
    for i, p in enumerate(pieces):
        ids[i, : len(p) + 1] = torch.tensor(p + [eot])
        mask[i, : len(p) + 1] = 1
    return {"input_ids": ids, "attention_mask": mask}


def trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut the padding columns every row has: the causal text tower gives the EOT position the
    same output on the shorter sequence, and the step costs what the longest caption needs."""
    n = int(batch["attention_mask"].sum(dim=1).max())
    return {"input_ids": batch["input_ids"][:, :n], "attention_mask": batch["attention_mask"][:, :n]}


class CaptionTexts:
    """The baseline's texts: a tokenised caption per sample per step (see module doc)."""

    def __init__(self, cfg: Profile, tokenizer):
        self.use_long = any(entry[0] == "long_caption" for entry in cfg.embed.plan)
        self.tokenizer = tokenizer
        self.context = cfg.baseline.context_length
        self.eot = len(tokenizer)

    def texts(self, sample: int, row: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        text = row["caption"]
        if self.use_long and row["long_caption"] and float(torch.rand(1, generator=generator)) < LONG_CAPTION_P:
            text = row["long_caption"]
        return {k: v[0] for k, v in tokenize(self.tokenizer, [text], self.context, self.eot).items()}


class ClipEncoder:
    """A trained CLIP baseline for evaluation: normalised image and text embeddings."""

    def __init__(self, model: CLIPModel, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context = model.config.text_config.max_position_embeddings
        self.eot = model.config.text_config.eos_token_id

    @classmethod
    def load(cls, model_dir: Path, device: str | torch.device = "cpu") -> "ClipEncoder":
        if not (model_dir / "model.safetensors").is_file() or not (model_dir / TOKENIZER).is_dir():
            raise CheckpointError(f"no trained CLIP model in {model_dir} (run the train_baseline stage)")
        model = CLIPModel.from_pretrained(model_dir, use_safetensors=True).to(device)
        return cls(model, AutoTokenizer.from_pretrained(model_dir / TOKENIZER))

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.model.get_image_features(pixel_values=pixels.to(self.device))
        return F.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        batch = trim(tokenize(self.tokenizer, texts, self.context, self.eot))
        feats = self.model.get_text_features(**{k: v.to(self.device) for k, v in batch.items()})
        return F.normalize(feats.float(), dim=-1)


def publish_pretrained(obj, out_dir: Path) -> None:
    """``obj.save_pretrained`` into ``out_dir``, each file renamed into place atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pretrained.", suffix=".tmp", dir=out_dir) as tmp:
        obj.save_pretrained(tmp)
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, out_dir / f.name)


def save_clip(out_dir: Path, model: CLIPModel, tokenizer) -> None:
    """``model.safetensors`` + ``config.json`` (transformers' CLIPModel), ``vision/`` (the image
    tower with its projection, ``CLIPVisionModelWithProjection``) and ``tokenizer/``."""
    publish_pretrained(model, out_dir)
    vision = CLIPVisionModelWithProjection(model.config.vision_config)
    vision.load_state_dict({k: v for k, v in model.state_dict().items()
                            if k.startswith(("vision_model.", "visual_projection."))})
    with atomic_path(Path(out_dir) / "vision") as tmp:
        vision.save_pretrained(tmp)
    with atomic_path(Path(out_dir) / TOKENIZER) as tmp:
        tokenizer.save_pretrained(tmp)


def load_clip(model_dir: str | Path, device: str | torch.device = "cpu") -> ClipEncoder:
    """The trained CLIP baseline in eval mode: ``encode_image(pixels)``, ``encode_text(texts)``."""
    return ClipEncoder.load(Path(model_dir), device)


def clip_recipe(cfg: Profile) -> Recipe:
    tokenizer = load_tokenizer(cfg.embed)
    texts = CaptionTexts(cfg, tokenizer)
    data = TrainStream(cfg, texts, local_batch(cfg))
    model = CLIPModel(clip_config(cfg, texts.eot))
    if cfg.vision.gradient_checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})

    def features(wrapped: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        out = wrapped(**trim(batch), pixel_values=batch["pixels"])
        return {"images": out.image_embeds, "texts": out.text_embeds}

    def loss(feats: dict, head: dict) -> torch.Tensor:
        return info_nce(feats["images"], feats["texts"], head["logit_scale"])

    identity = identity_of(cfg, kind="clip", baseline=cfg.baseline.model_dump(mode="json"),
                           tokenizer={"llm": cfg.embed.llm, "vocab": len(tokenizer)})
    return Recipe(kind="clip", paths=Paths.of(cfg), model=model, data=data, features=features,
                  head=lambda bare: {"logit_scale": bare.logit_scale}, loss=loss, identity=identity,
                  export=lambda m, out: save_clip(out, m, tokenizer),
                  check=clip_check(cfg, texts) if cfg.train.eval_every else None)


def clip_check(cfg: Profile, texts: CaptionTexts):
    """The retrieval check (check.py): CLIP's own towers on the rows' images and captions."""
    rows = check_rows(cfg, lambda key: True)
    tokens = trim(tokenize(texts.tokenizer, rows.captions, texts.context, texts.eot))

    def encode_texts(model: CLIPModel) -> torch.Tensor:
        device = model.logit_scale.device
        return F.normalize(model.get_text_features(**{k: v.to(device) for k, v in tokens.items()}).float(), dim=-1)

    return lambda model: run_check(
        model, rows, lambda m, pixels: F.normalize(m.get_image_features(pixel_values=pixels).float(), dim=-1),
        encode_texts)


def train_baseline(cfg: Profile) -> StageOutput:
    """The train_baseline stage: CLIP with a text tower from scratch -> ``models/clip/``."""
    return run(cfg, clip_recipe)
