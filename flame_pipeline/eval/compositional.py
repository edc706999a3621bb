"""A compositional probe in SugarCrepe's seven kinds, on generated scenes.

Each probe image is a scene of the scene generator (``data/scenes.py``) with two or more
objects, drawn from a stream of its own (``scene_rng(seed, "compositional", i)``: never a
training, test or validation scene) without the held-out colour/shape pairs. Its true caption
states two objects and how they stand to each other on the grid, "a red circle to the left of
a blue square", and each kind makes one hard negative from it (SugarCrepe, Hsieh et al. 2023):

- ``replace_obj``: one object's shape becomes a shape the scene does not have;
- ``replace_att``: one object's colour becomes a colour the scene does not have;
- ``replace_rel``: the relation becomes its opposite (left <-> right, above <-> below);
- ``swap_obj``: the two objects trade places in the sentence;
- ``swap_att``: the two objects trade colours;
- ``add_obj``: "and a <colour> <shape>" of a shape the scene does not have is appended;
- ``add_att``: one object gains the size it does not have (small <-> large).

``holds`` checks a caption's claim against the scene: the true caption holds and no negative
does. A model scores a pair right when the image's cosine with the true caption is higher than
with the negative (a tie is wrong); accuracy per kind in percent (chance 50) as
``compositional/<kind>``. Captions are short English text (prompt set by
``prompt_sets.query_set``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from flame_pipeline.config import CompositionalBenchmark, Profile, ScenesSource
from flame_pipeline.data.scene_lexicon import COLOURS, SHAPES, English
from flame_pipeline.data.scenes import Scene, SceneObject, render_png, sample_scene, scene_rng
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.prompt_sets import query_set

KINDS = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
PHRASES = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
OTHER_SIZE = {"small": "large", "large": "small"}


@dataclass(frozen=True)
class Mention:
    colour: str
    shape: str
    size: str | None = None      # stated only by the add_att negative

    def text(self) -> str:
        words = " ".join(w for w in (self.size, self.colour, self.shape) if w)
        return f"{English.article(words)} {words}"

    def matches(self, o: SceneObject) -> bool:
        return (o.colour, o.shape) == (self.colour, self.shape) and self.size in (None, o.size)


@dataclass(frozen=True)
class Claim:
    """What a probe caption states: ``subject`` stands ``relation`` of ``object`` on the grid,
    and the ``extra`` objects are there too."""
    subject: Mention
    relation: str
    object: Mention
    extra: tuple[Mention, ...] = ()

    def text(self) -> str:
        out = f"{self.subject.text()} {PHRASES[self.relation]} {self.object.text()}"
        return out + "".join(f" and {m.text()}" for m in self.extra) + "."


def relation_holds(a: SceneObject, relation: str, b: SceneObject) -> bool:
    return {"left": a.col < b.col, "right": a.col > b.col,
            "above": a.row < b.row, "below": a.row > b.row}[relation]


def holds(claim: Claim, scene: Scene) -> bool:
    """Every fact the claim states is true of the scene."""
    def find(m: Mention) -> SceneObject | None:
        return next((o for o in scene.objects if m.matches(o)), None)
    a, b = find(claim.subject), find(claim.object)
    return (a is not None and b is not None and a is not b and relation_holds(a, claim.relation, b)
            and all(find(m) is not None for m in claim.extra))


@dataclass(frozen=True)
class ProbeItem:
    index: int
    scene: Scene
    image: bytes
    true: Claim
    negatives: dict[str, Claim]     # kind -> its hard negative


def _negatives(scene: Scene, true: Claim, a: SceneObject, b: SceneObject,
               rng: random.Random) -> dict[str, Claim]:
    """The hard negative of each kind for the true claim ``a <relation> b`` (module doc)."""
    free_shapes = [s for s in SHAPES if s not in {o.shape for o in scene.objects}]
    free_colours = [c for c in COLOURS if c not in {o.colour for o in scene.objects}]
    side = rng.choice(("subject", "object"))   # the mention a replace or add_att changes
    target = getattr(true, side)
    size = (a if side == "subject" else b).size
    return {
        "replace_obj": replace(true, **{side: replace(target, shape=rng.choice(free_shapes))}),
        "replace_att": replace(true, **{side: replace(target, colour=rng.choice(free_colours))}),
        "replace_rel": replace(true, relation=OPPOSITE[true.relation]),
        "swap_obj": Claim(true.object, true.relation, true.subject),
        "swap_att": Claim(replace(true.subject, colour=b.colour), true.relation,
                          replace(true.object, colour=a.colour)),
        "add_obj": replace(true, extra=(Mention(rng.choice(COLOURS), rng.choice(free_shapes)),)),
        "add_att": replace(true, **{side: replace(target, size=OTHER_SIZE[size])}),
    }


def probe_item(seed: int, index: int, image_size: int) -> ProbeItem:
    """Probe image ``index``: the first scene of its stream with a pair of objects that differ
    in colour and in shape and stand in a grid relation that no negative made from them
    holds of (a third object could make a swap true), and those negatives."""
    rng = scene_rng(seed, "compositional", index)
    while True:
        scene = sample_scene(rng, held_out=False)
        pairs = [(a, b) for a in scene.objects for b in scene.objects
                 if a.colour != b.colour and a.shape != b.shape and (a.row != b.row or a.col != b.col)]
        rng.shuffle(pairs)
        for a, b in pairs:
            relation = rng.choice([r for r in PHRASES if relation_holds(a, r, b)])
            true = Claim(Mention(a.colour, a.shape), relation, Mention(b.colour, b.shape))
            negatives = _negatives(scene, true, a, b, rng)
            if not any(holds(c, scene) for c in negatives.values()):
                return ProbeItem(index, scene, render_png(scene, image_size), true, negatives)


def probe_items(seed: int, n: int, image_size: int) -> Iterator[ProbeItem]:
    return (probe_item(seed, i, image_size) for i in range(n))


def image_size_of(cfg: Profile) -> int:
    """The profile's scene size when it generates scenes (the probe looks like its training
    scenes), else the vision tower's input size."""
    return next((s.image_size for s in cfg.download.sources if isinstance(s, ScenesSource)),
                cfg.vision.image_size)


def accuracy(model: EvalModel, items: list[ProbeItem], prompt_set: str) -> dict[str, dict[str, float]]:
    """Per kind: the share of items whose image is closer to the true caption than to the
    kind's negative (``accuracy``, %), chance (50) and the number of pairs."""
    images = model.image_embeddings([it.image for it in items])
    texts = sorted({c.text() for it in items for c in (it.true, *it.negatives.values())})
    index = {t: i for i, t in enumerate(texts)}
    text_emb = model.text_embeddings(texts, prompt_set)
    sims = np.einsum("nd,nkd->nk", images, text_emb[[[index[c.text()] for c in (it.true, *(
        it.negatives[k] for k in KINDS))] for it in items]])
    return {f"compositional/{k}": {"accuracy": float(100.0 * np.mean(sims[:, 0] > sims[:, j + 1])),
                                   "chance_accuracy": 50.0, "n_pairs": float(len(items))}
            for j, k in enumerate(KINDS)}


def score(cfg: Profile, spec: CompositionalBenchmark, model: EvalModel,
          items: list[ProbeItem]) -> dict[str, dict[str, float]]:
    return accuracy(model, items, query_set(spec.prompt_set, cfg.eval.prompt_mode))


def items_of(cfg: Profile, spec: CompositionalBenchmark) -> list[ProbeItem]:
    return list(probe_items(cfg.seed if spec.seed is None else spec.seed, spec.n, image_size_of(cfg)))
