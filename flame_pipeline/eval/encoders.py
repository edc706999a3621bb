"""One evaluation interface for both models, so every benchmark runs the same code on each.

``EvalModel`` turns PNG bytes into normalised image embeddings and pooled vision features
(the linear-probe input), and texts into normalised text embeddings. Only the text side
differs: FLAME embeds text with the frozen LLM through ``TextEncoder`` (the chosen prompt
set's facets, averaged), CLIP with its own text tower (which has no prompt sets).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from flame_pipeline.config import Profile
from flame_pipeline.paths import Paths
from flame_pipeline.vision.preprocess import eval_batch

MODELS = ("flame", "clip")


class VisionModel(Protocol):
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor: ...
    def pooled_features(self, pixels: torch.Tensor) -> torch.Tensor: ...


TextFn = Callable[[list[str], str], np.ndarray]   # (texts, prompt set) -> [n, d] normalised


@dataclass
class EvalModel:
    name: str
    vision: VisionModel
    text: TextFn
    image_size: int
    batch_size: int

    def _images(self, pngs: Sequence[bytes], fn) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(pngs), self.batch_size):
                pixels = eval_batch(list(pngs[start:start + self.batch_size]), self.image_size)
                out.append(fn(pixels).float().numpy())
        if not out:
            raise ValueError(f"{self.name}: no images to encode")
        return np.concatenate(out)

    def image_embeddings(self, pngs: Sequence[bytes]) -> np.ndarray:
        return self._images(pngs, self.vision.encode_image)

    def pooled_features(self, pngs: Sequence[bytes]) -> np.ndarray:
        return self._images(pngs, self.vision.pooled_features)

    def text_embeddings(self, texts: Sequence[str], prompt_set: str) -> np.ndarray:
        if not texts:
            raise ValueError(f"{self.name}: no texts to encode")
        return np.asarray(self.text(list(texts), prompt_set), dtype=np.float32)


def load_eval_model(cfg: Profile, name: str) -> EvalModel:
    """The trained FLAME model (with the frozen LLM for text) or the CLIP baseline."""
    from flame_pipeline.train.checkpoint import load_clip, load_flame

    paths = Paths.of(cfg)
    if name == "flame":
        from flame_pipeline.text.precompute import TextEncoder

        encoder = TextEncoder(cfg.embed, paths.embed_cache)
        vision = load_flame(paths.flame_model)
        text: TextFn = lambda texts, prompt_set: encoder.encode(texts, prompt_set)  # noqa: E731
    elif name == "clip":
        vision = load_clip(paths.clip_model)
        text = lambda texts, prompt_set: _numpy(vision.encode_text(texts))  # noqa: E731
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    return EvalModel(name, vision, text, cfg.vision.image_size, cfg.eval.batch_size)


def _numpy(x) -> np.ndarray:
    with torch.inference_mode():
        return x.float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
