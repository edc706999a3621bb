"""FLAME: the train stage's recipe (the image tower on the stored frozen-LLM embeddings, the
multi-positive sigmoid loss) and the finished model's files.

``models/flame/``: ``model.safetensors`` (the whole ``FlameModel``: ViT, projector, logit
scale and bias) + ``config.json`` (``kind``, ``d_llm``, the vision config, the embedding
identity) and ``vision/``, the ViT through ``save_pretrained`` (loadable with
``ViTModel.from_pretrained(dir, add_pooling_layer=False)``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flame_pipeline.config import Profile, VisionConfig
from flame_pipeline.files import atomic_path, write_json
from flame_pipeline.paths import Paths
from flame_pipeline.stage import StageOutput
from flame_pipeline.train.check import check_rows, run_check
from flame_pipeline.train.checkpoint import CheckpointError
from flame_pipeline.train.data import StoredEmbeddings, TrainStream, local_batch
from flame_pipeline.train.loop import Recipe, identity_of, run
from flame_pipeline.train.loss import sigmoid_loss
from flame_pipeline.vision.towers import FlameModel

MODEL = "model.safetensors"
CONFIG = "config.json"
VISION = "vision"


def flame_recipe(cfg: Profile) -> Recipe:
    texts = StoredEmbeddings(cfg)
    dim = texts.dim
    data = TrainStream(cfg, texts, local_batch(cfg))
    model = FlameModel(cfg.vision, dim, cfg.train.logit_scale_init, cfg.train.logit_bias_init)
    embed = {"llm": cfg.embed.llm, "layer": cfg.embed.layer, "dim": dim,
             "names": list(texts.meta["names"])}

    def features(wrapped: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        return {"images": wrapped(batch["pixels"]), "texts": batch["texts"], "text_mask": batch["text_mask"]}

    def head(bare: FlameModel) -> dict[str, torch.Tensor]:
        return {"logit_scale": bare.logit_scale, "logit_bias": bare.logit_bias}

    def loss(feats: dict, head: dict) -> torch.Tensor:
        return sigmoid_loss(feats["images"], feats["texts"], head["logit_scale"], head["logit_bias"],
                            feats["text_mask"])

    return Recipe(kind="flame", paths=Paths.of(cfg), model=model, data=data, features=features,
                  head=head, loss=loss,
                  identity=identity_of(cfg, kind="flame", embed=embed),
                  export=lambda m, out: save_flame(out, m, {"embed": embed}),
                  check=flame_check(cfg, texts) if cfg.train.eval_every else None)


def flame_check(cfg: Profile, texts: StoredEmbeddings):
    """The retrieval check (check.py): images through the tower, the rows' stored queries."""
    rows = check_rows(cfg, texts.keys().__contains__)
    queries = torch.from_numpy(texts.queries(rows.keys))
    return lambda model: run_check(model, rows, lambda m, pixels: m.encode_image(pixels),
                                   lambda m: queries)


def train(cfg: Profile) -> StageOutput:
    """The train stage: FLAME's image tower on the stored embeddings -> ``models/flame/``."""
    return run(cfg, flame_recipe)


def save_flame(out_dir: Path, model: FlameModel, extra: dict) -> None:
    """``model.safetensors`` + ``config.json`` and ``vision/`` (see the module doc)."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / MODEL) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    with atomic_path(out_dir / VISION) as tmp:
        model.vit.save_pretrained(tmp)
    write_json(out_dir / CONFIG, dict(extra, kind="flame", d_llm=model.d_llm,
                                      vision=model.vision_config.model_dump(mode="json")))


def load_flame(model_dir: str | Path, device: str | torch.device = "cpu") -> FlameModel:
    """The trained FLAME image tower in eval mode: ``encode_image``, ``projected_tokens``,
    ``pooled_features``, ``patch_features``."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / CONFIG
    if not cfg_path.is_file() or not (model_dir / MODEL).is_file():
        raise CheckpointError(f"no trained FLAME model in {model_dir} (run the train stage)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("kind") != "flame":
        raise CheckpointError(f"{cfg_path} describes a {cfg.get('kind')!r} model, not 'flame'")
    vision = VisionConfig.model_validate(dict(cfg["vision"], gradient_checkpointing=False))
    model = FlameModel(vision, int(cfg["d_llm"]))
    model.load_state_dict(load_file(str(model_dir / MODEL)))
    return model.to(device).eval()

