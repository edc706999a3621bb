"""One evaluation interface for both models, so every benchmark runs the same code on each.

``EvalModel`` turns PNG bytes into normalised image embeddings and pooled vision features
(the linear-probe input), and texts into normalised text embeddings. Only the text side
differs: FLAME embeds text with the frozen LLM through ``TextEncoder`` (the chosen prompt
set's facets, averaged), CLIP with its own text tower (which has no prompt sets).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from flame_pipeline.config import Profile
from flame_pipeline.paths import Paths
from flame_pipeline.vision.preprocess import eval_batch

MODELS = ("flame", "clip")

Pixels = Callable[[torch.Tensor], torch.Tensor]   # [n, 3, H, W] -> [n, d]
TextFn = Callable[[list[str], str], np.ndarray]   # (texts, prompt set) -> [n, d] normalised


@dataclass
class EvalModel:
    name: str
    encode_image: Pixels      # normalised image embedding in the shared space
    pooled: Pixels            # mean of the last layer's patch tokens, no projection
    text: TextFn
    image_size: int
    batch_size: int
    patch_tokens: Pixels | None = None   # [n, P, d] projected patch tokens (FLAME's map)

    def _images(self, pngs: Sequence[bytes], fn: Pixels) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(pngs), self.batch_size):
                pixels = eval_batch(list(pngs[start:start + self.batch_size]), self.image_size)
                out.append(fn(pixels).float().numpy())
        if not out:
            raise ValueError(f"{self.name}: no images to encode")
        return np.concatenate(out)

    def image_embeddings(self, pngs: Sequence[bytes]) -> np.ndarray:
        return self._images(pngs, self.encode_image)

    def pooled_features(self, pngs: Sequence[bytes]) -> np.ndarray:
        return self._images(pngs, self.pooled)

    def projected_tokens(self, pngs: Sequence[bytes]) -> np.ndarray:
        if self.patch_tokens is None:
            raise ValueError(f"{self.name}: no projected patch tokens (the token map is FLAME's)")
        return self._images(pngs, self.patch_tokens)

    def text_embeddings(self, texts: Sequence[str], prompt_set: str) -> np.ndarray:
        if not texts:
            raise ValueError(f"{self.name}: no texts to encode")
        return np.asarray(self.text(list(texts), prompt_set), dtype=np.float32)


def clip_pooled(clip) -> Pixels:
    """CLIP's linear-probe features, as FLAME's: the vision transformer's last-layer patch tokens
    (CLS dropped) averaged, before any projection."""
    def pooled(pixels: torch.Tensor) -> torch.Tensor:
        hidden = clip.model.vision_model(pixel_values=pixels.to(clip.device)).last_hidden_state
        return hidden[:, 1:].mean(dim=1)
    return pooled


def load_eval_model(cfg: Profile, name: str) -> EvalModel:
    """The trained FLAME tower with the frozen LLM for text, or the CLIP baseline."""
    from flame_pipeline.train.clip import load_clip
    from flame_pipeline.train.flame import load_flame

    paths = Paths.of(cfg)
    size, batch = cfg.vision.image_size, cfg.eval.batch_size
    if name == "flame":
        from flame_pipeline.text.encoder import TextEncoder

        encoder = TextEncoder.of(cfg)
        flame = load_flame(paths.flame_model)
        return EvalModel(name, flame.encode_image, flame.pooled_features,
                         lambda texts, prompt_set: encoder.encode(texts, prompt_set), size, batch,
                         patch_tokens=flame.projected_tokens)
    if name == "clip":
        clip = load_clip(paths.clip_model)
        # CLIP's own text tower has no prompt sets: every text is embedded as it is
        return EvalModel(name, clip.encode_image, clip_pooled(clip),
                         lambda texts, _prompt_set: clip.encode_text(texts).numpy(), size, batch)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
