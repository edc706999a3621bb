"""Reading a generated scene's facts back from its pixels (the scene and probe tests)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from flame_pipeline.data import scenes as sc

COLOURS = sc.SCENE_CLASSES["colour"]


def pixels(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    assert img.mode == "RGB"
    return np.asarray(img).astype(np.int32)


def nearest_palette(arr: np.ndarray, background: str) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's nearest palette name, and whether it is that colour up to the jitter
    (anti-aliased edges, e.g. yellow over black, can be nearest to another colour)."""
    names = [background, *COLOURS]
    pal = np.array([sc.BACKGROUND_RGB[background], *(sc.RGB[c] for c in COLOURS)])
    d = ((arr[:, :, None, :] - pal[None, None]) ** 2).sum(-1)
    return np.array(names, dtype=object)[d.argmin(-1)], d.min(-1) <= 3 * sc.COLOUR_JITTER ** 2


def cell_slices(size, row, col):
    centres = (np.arange(size) + 0.5) * 3 / size
    rows, cols = np.nonzero(np.floor(centres)[:, None] == row)[0], np.nonzero(np.floor(centres) == col)[0]
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)
