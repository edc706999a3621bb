"""Built-in captioned scenes: shapes drawn with Pillow, captions whose every fact is visible.

A scene is 1-4 objects (shape, colour, size, cell of a 3x3 grid; at most one object per cell,
so nothing overlaps) on a plain background. Each scene gets a short caption (the objects) and
a long one (count, every object's size/colour/shape/position, pairwise left/right/above/below
relations, background), in the languages of ``scene_lexicon``.

Honest test sets: test captions use the lexicon's ``test`` phrasebook only, some
(colour, shape) pairs (``HELD_OUT_COMBOS``) never appear in training scenes, and each test
scene can come with a hard negative (one attribute swapped or the layout mirrored).
Every sample's randomness comes from ``(seed, split, index)``, so the output is byte-identical
across runs and the training set does not depend on ``n_test``. ``validation_scenes`` draws a
third stream, captioned with a third phrasebook, for choosing settings (``experiments/validation.py``).
"""
from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Literal, Sequence

from PIL import Image, ImageDraw

from flame_pipeline.config import ScenesSource
from flame_pipeline.data.sample import RawSample
from flame_pipeline.data.scene_lexicon import (BACKGROUNDS, COLOURS, SHAPES, SIZES, English, Language,
                                               Phrasebook, get_language)

RGB = {"red": (215, 40, 40), "orange": (245, 140, 20), "yellow": (240, 215, 30),
       "green": (40, 160, 60), "blue": (40, 90, 220), "purple": (130, 50, 180),
       "pink": (240, 120, 190), "brown": (125, 80, 40)}
BACKGROUND_RGB = {"white": (245, 245, 245), "grey": (128, 128, 128), "black": (15, 15, 15)}
COLOUR_JITTER = 8           # per-channel +- jitter of every drawn colour
# never in a training scene, present in test scenes: each colour and each shape once
HELD_OUT_COMBOS = frozenset(zip(COLOURS, ("star", "heart", "ring", "triangle", "cross", "circle",
                                          "diamond", "square")))
COUNT_WEIGHTS = {1: 1, 2: 2, 3: 3, 4: 3}   # more crowded scenes -> more long captions
GRID = 3
SUPERSAMPLE = 4
# object half-extent as a fraction of a grid cell, and the gap kept to the cell border
RADIUS = {"small": (0.17, 0.23), "large": (0.36, 0.43)}
CELL_MARGIN = 0.05

SCENE_CLASSES = {"shape": list(SHAPES), "colour": list(COLOURS),
                 "count": [str(n) for n in COUNT_WEIGHTS]}
_COUNT_WORDS = {1: "one", **English.numbers}


def class_text(task: str, value: str) -> str:
    """English class-name text for a label value: "a circle", "a red object", "three objects"."""
    if task == "shape" and value in SHAPES:
        return f"{English.article(value)} {value}"
    if task == "colour" and value in COLOURS:
        return f"{English.article(value)} {value} object"
    if task == "count" and value in SCENE_CLASSES["count"]:
        n = int(value)
        return f"{_COUNT_WORDS[n]} object{'s' if n > 1 else ''}"
    raise ValueError(f"scenes: no class {value!r} for task {task!r}; classes: {SCENE_CLASSES}")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    row: int
    col: int
    cx: float          # centre and half-extent, as fractions of the image side
    cy: float
    r: float
    rgb: tuple[int, int, int]

    def mirrored(self) -> "SceneObject":
        return replace(self, col=GRID - 1 - self.col, cx=1.0 - self.cx)


@dataclass(frozen=True)
class Scene:
    background: str
    bg_rgb: tuple[int, int, int]
    objects: tuple[SceneObject, ...]

    def main(self) -> SceneObject:
        """The largest object; the first one among equals."""
        return next((o for o in self.objects if o.size == "large"), self.objects[0])

    def labels(self) -> dict[str, str]:
        main = self.main()
        return {"shape": main.shape, "colour": main.colour, "count": str(len(self.objects))}


def _pick(rng: random.Random, seq: Sequence):
    """One uniform draw per call, whatever ``len(seq)``: keeps caption streams aligned."""
    return seq[int(rng.random() * len(seq))]


def _jitter(rng: random.Random, rgb: tuple[int, int, int], neutral: bool = False) -> tuple[int, int, int]:
    """``rgb`` shifted by up to ``COLOUR_JITTER`` per channel (the same shift for all when
    ``neutral``, so a white/grey/black background stays untinted)."""
    shifts = [rng.randint(-COLOUR_JITTER, COLOUR_JITTER)] * 3 if neutral else \
        [rng.randint(-COLOUR_JITTER, COLOUR_JITTER) for _ in rgb]
    return tuple(min(255, max(0, c + d)) for c, d in zip(rgb, shifts))


def sample_scene(rng: random.Random, held_out: bool) -> Scene:
    """A random scene; ``held_out=False`` never uses a ``HELD_OUT_COMBOS`` pair."""
    n = rng.choices(list(COUNT_WEIGHTS), weights=list(COUNT_WEIGHTS.values()))[0]
    combos = [(c, s) for c in COLOURS for s in SHAPES if held_out or (c, s) not in HELD_OUT_COMBOS]
    cell = 1.0 / GRID
    objects = []
    for (colour, shape), idx in zip(rng.sample(combos, n), rng.sample(range(GRID * GRID), n)):
        size = _pick(rng, SIZES)
        r = rng.uniform(*RADIUS[size]) * cell
        slack = cell / 2 - r - CELL_MARGIN * cell
        row, col = divmod(idx, GRID)
        objects.append(SceneObject(
            shape=shape, colour=colour, size=size, row=row, col=col,
            cx=(col + 0.5) * cell + rng.uniform(-slack, slack),
            cy=(row + 0.5) * cell + rng.uniform(-slack, slack),
            r=r, rgb=_jitter(rng, RGB[colour])))
    background = _pick(rng, BACKGROUNDS)
    return Scene(background, _jitter(rng, BACKGROUND_RGB[background], neutral=True), tuple(objects))


# ------------------------------------------------------------------------- drawing
def _star(cx, cy, r, points=5, inner=0.45):
    return [(cx + (r if k % 2 == 0 else r * inner) * math.sin(k * math.pi / points),
             cy - (r if k % 2 == 0 else r * inner) * math.cos(k * math.pi / points))
            for k in range(2 * points)]


def _draw_heart(d: ImageDraw.ImageDraw, cx, cy, r, fill):
    lobe = 0.5 * r
    for sx in (-1, 1):
        x = cx + sx * 0.45 * r
        d.ellipse([x - lobe, cy - 0.3 * r - lobe, x + lobe, cy - 0.3 * r + lobe], fill=fill)
    d.polygon([(cx - 0.93 * r, cy - 0.15 * r), (cx + 0.93 * r, cy - 0.15 * r), (cx, cy + 0.95 * r)],
              fill=fill)


def _draw_cross(d: ImageDraw.ImageDraw, cx, cy, r, fill):
    w = 0.33 * r
    d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)


_DRAW: dict[str, Callable] = {
    "circle": lambda d, cx, cy, r, fill: d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill),
    "square": lambda d, cx, cy, r, fill: d.rectangle(
        [cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r], fill=fill),
    "triangle": lambda d, cx, cy, r, fill: d.polygon(
        [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill),
    "star": lambda d, cx, cy, r, fill: d.polygon(_star(cx, cy, r), fill=fill),
    "cross": _draw_cross,
    "ring": lambda d, cx, cy, r, fill: d.ellipse(
        [cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(1, round(0.38 * r))),
    "diamond": lambda d, cx, cy, r, fill: d.polygon(
        [(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)], fill=fill),
    "heart": _draw_heart,
}
assert set(_DRAW) == set(SHAPES)


def draw_scene(scene: Scene, size: int) -> Image.Image:
    """The scene as a ``size`` x ``size`` RGB image, drawn at 4x and box-downsampled."""
    side = size * SUPERSAMPLE
    img = Image.new("RGB", (side, side), scene.bg_rgb)
    d = ImageDraw.Draw(img)
    for o in scene.objects:
        _DRAW[o.shape](d, o.cx * side, o.cy * side, o.r * side, o.rgb)
    return img.reduce(SUPERSAMPLE)


def render_png(scene: Scene, size: int) -> bytes:
    buf = io.BytesIO()
    draw_scene(scene, size).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------- captions
def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def _relations(a: SceneObject, b: SceneObject) -> list[str]:
    """Every grid relation of ``a`` to ``b``: vertical, then horizontal (both for a diagonal)."""
    out = []
    if a.row != b.row:
        out.append("above" if a.row < b.row else "below")
    if a.col != b.col:
        out.append("left" if a.col < b.col else "right")
    return out


def describe(scene: Scene, lang: Language, book: Phrasebook, rng: random.Random) -> tuple[str, str]:
    """(short caption, long caption) of ``scene`` in ``lang`` with the phrases of ``book``."""
    objs = scene.objects
    bg, bg_attr = lang.backgrounds[scene.background]
    indef = [lang.indefinite(o.colour, o.shape, book.sizes[o.size]) for o in objs]
    short = _pick(rng, book.short).format(objs=lang.join(indef, book.conj), bg=bg, bg_attr=bg_attr)
    if len(objs) == 1:
        sentences = [_pick(rng, book.count_one)]
    else:
        sentences = [_pick(rng, book.count_many).format(n=lang.numbers[len(objs)])]
    for o, a in zip(objs, indef):
        sentences.append(_pick(rng, book.obj).format(a=a, pos=book.positions[o.row * GRID + o.col]))
    for i, a in enumerate(objs):
        for b in objs[i + 1:]:
            for relation in _relations(a, b):
                sentences.append(_pick(rng, book.relation[relation]).format(
                    the=lang.definite(a.colour, a.shape), other=lang.oblique(b.colour, b.shape),
                    other_def=lang.definite(b.colour, b.shape)))
    sentences.append(_pick(rng, book.background).format(bg=bg, bg_attr=bg_attr))
    return lang.finish(short), lang.finish(" ".join(_sentence(s) for s in sentences))


# ------------------------------------------------------------------------- hard negatives
def hard_negative(scene: Scene, rng: random.Random, held_out: bool = True) -> Scene:
    """``scene`` with one fact changed: one object's colour or shape, or left<->right mirrored;
    ``held_out=False`` never makes a ``HELD_OUT_COMBOS`` pair."""
    kinds = ["colour", "shape"]
    if any(o.col != GRID // 2 for o in scene.objects):
        kinds.append("mirror")
    kind = _pick(rng, kinds)
    if kind == "mirror":
        return replace(scene, objects=tuple(o.mirrored() for o in scene.objects))
    k = int(rng.random() * len(scene.objects))
    target = scene.objects[k]
    taken = {(o.colour, o.shape) for o in scene.objects} | (set() if held_out else HELD_OUT_COMBOS)
    if kind == "colour":
        options = [c for c in COLOURS if (c, target.shape) not in taken]
        colour = _pick(rng, options)
        changed = replace(target, colour=colour, rgb=_jitter(rng, RGB[colour]))
    else:
        options = [s for s in SHAPES if (target.colour, s) not in taken]
        changed = replace(target, shape=_pick(rng, options))
    return replace(scene, objects=scene.objects[:k] + (changed,) + scene.objects[k + 1:])


# ------------------------------------------------------------------------- the source
def _languages(src: ScenesSource) -> list[Language]:
    langs = [get_language(code) for code in src.languages]
    if len(set(src.languages)) != len(src.languages):
        raise ValueError(f"scenes: languages repeat: {src.languages}")
    if "en" not in src.languages:
        raise ValueError(f"scenes: languages {src.languages} must include 'en' "
                         "(training captions and hard negatives are English)")
    if src.train_foreign_fraction > 0 and len(langs) == 1:
        raise ValueError("scenes: train_foreign_fraction > 0 needs a language besides 'en'")
    return langs


def scene_rng(seed: int, *parts) -> random.Random:
    """The generator of one (split, index[, language]) stream: ``random.Random`` of the joined parts."""
    return random.Random(":".join(["scenes", str(seed), *map(str, parts)]))


def generate_scenes(src: ScenesSource, seed: int) -> Iterator[RawSample]:
    """All samples of the scenes source: ``src.n_train`` training rows, then per test scene one
    row per language and (with ``src.hard_negatives``) one English hard negative.

    Raises ``ValueError`` at call time for an unsupported or missing language.
    """
    langs = _languages(src)
    return _generate(src, seed, langs)


def _generate(src: ScenesSource, seed: int, langs: list[Language]) -> Iterator[RawSample]:
    english = get_language("en")
    foreign = [lang for lang in langs if lang.code != "en"]
    for i in range(src.n_train):
        rng = scene_rng(seed, "train", i)
        scene = sample_scene(rng, held_out=False)
        lang = english
        if rng.random() < src.train_foreign_fraction:
            lang = _pick(rng, foreign)
        short, long = describe(scene, lang, lang.train, rng)
        key = f"scenes/train/{i:06d}"
        yield RawSample(key=key, source="scenes", source_ref=f"scenes?seed={seed}&split=train&index={i}",
                        image=render_png(scene, src.image_size), caption=short, long_caption=long,
                        language=lang.code, split="train", labels=scene.labels())
    for i in range(src.n_test):
        yield from _captioned(src, seed, "test", i, langs, f"scene-{i:06d}")


def evaluation_scenes(seed: int, split: Literal["test", "val"], i: int) -> tuple[Scene, Scene]:
    """Scene ``i`` of the test or validation split and its hard negative. Test scenes may show
    a ``HELD_OUT_COMBOS`` pair (training and validation scenes never do)."""
    held_out = split == "test"
    scene = sample_scene(scene_rng(seed, split, i), held_out=held_out)
    return scene, hard_negative(scene, scene_rng(seed, f"{split}-neg", i), held_out=held_out)


def _captioned(src: ScenesSource, seed: int, split: Literal["test", "val"], i: int,
               langs: list[Language], group: str) -> Iterator[RawSample]:
    """The rows of evaluation scene ``i``: one per language, captioned with the language's
    phrasebook of ``split``, then (with ``src.hard_negatives``) one English hard negative."""
    scene, neg = evaluation_scenes(seed, split, i)
    png = render_png(scene, src.image_size)
    ref = f"scenes?seed={seed}&split={split}&index={i}"
    for lang in langs:
        short, long = describe(scene, lang, getattr(lang, split), scene_rng(seed, split, i, lang.code))
        yield RawSample(key=f"scenes/{split}/{lang.code}/{i:06d}", source="scenes", source_ref=ref,
                        image=png, caption=short, long_caption=long, language=lang.code,
                        split=split, labels=scene.labels(), group=group)
    if src.hard_negatives:
        english = get_language("en")
        # the original's caption stream: the negative's captions differ only where the facts do
        short, long = describe(neg, english, getattr(english, split), scene_rng(seed, split, i, "en"))
        yield RawSample(key=f"scenes/{split}-neg/{i:06d}", source="scenes", source_ref=ref + "&negative=1",
                        image=render_png(neg, src.image_size), caption=short, long_caption=long,
                        language="en", split=split, group=group,
                        labels={**neg.labels(), "hard_negative_of": f"scenes/{split}/en/{i:06d}"})


def validation_scenes(src: ScenesSource, seed: int, n: int) -> Iterator[RawSample]:
    """``n`` validation scenes (split ``"val"``), to choose settings without the test split:
    drawn like training scenes (no held-out pair) from a stream of their own, captioned in
    every language of ``src`` with the lexicon's ``val`` phrasebook (phrasings in neither
    training nor test captions); one row per language, then (with ``src.hard_negatives``) an
    English hard negative, as in the test split."""
    langs = _languages(src)
    for i in range(n):
        yield from _captioned(src, seed, "val", i, langs, f"val-{i:06d}")
