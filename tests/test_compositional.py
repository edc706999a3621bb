"""The compositional probe: each negative differs from the true caption in exactly its kind's
way, the true caption's facts are in the pixels, the images are never training scenes, and
accuracy counts as it says."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from flame_pipeline.config import ScenesSource
from flame_pipeline.data import scenes as sc
from flame_pipeline.eval.compositional import (KINDS, OPPOSITE, OTHER_SIZE, Claim, Mention, accuracy,
                                               holds, probe_item, probe_items)
from flame_pipeline.eval.encoders import EvalModel

from eval_oracle import OracleVision, oracle_text
from scene_pixels import cell_slices, nearest_palette, pixels

ITEMS = list(probe_items(seed=0, n=60, image_size=48))


def content(text: str) -> list[str]:
    return [w.strip(".") for w in text.split() if w not in ("a", "an")]


def mentions(c: Claim) -> list[Mention]:
    return [c.subject, c.object, *c.extra]


def test_each_negative_differs_in_exactly_its_kind_s_way():
    relations = Counter()
    for it in ITEMS:
        t, n, scene = it.true, it.negatives, it.scene
        present_shapes = {o.shape for o in scene.objects}
        present_colours = {o.colour for o in scene.objects}
        relations[t.relation] += 1
        assert set(n) == set(KINDS)
        assert t.subject.size is None and t.object.size is None and not t.extra
        # replace: one mention's shape / colour, to one the scene lacks; the rest equal
        for kind, field, present in (("replace_obj", "shape", present_shapes),
                                     ("replace_att", "colour", present_colours)):
            neg = n[kind]
            changed = [(a, b) for a, b in zip(mentions(t), mentions(neg)) if a != b]
            assert neg.relation == t.relation and len(changed) == 1, kind
            (a, b), = changed
            assert replace(b, **{field: getattr(a, field)}) == a and getattr(b, field) not in present
        assert n["replace_rel"] == replace(t, relation=OPPOSITE[t.relation])
        assert n["swap_obj"] == Claim(t.object, t.relation, t.subject)
        assert n["swap_att"] == Claim(replace(t.subject, colour=t.object.colour), t.relation,
                                      replace(t.object, colour=t.subject.colour))
        assert t.subject.colour != t.object.colour and t.subject.shape != t.object.shape
        add = n["add_obj"]
        assert replace(add, extra=()) == t and len(add.extra) == 1 and add.extra[0].shape not in present_shapes
        att = n["add_att"]
        sized = [(a, b) for a, b in zip(mentions(t), mentions(att)) if a != b]
        assert len(sized) == 1 and replace(sized[0][1], size=None) == sized[0][0]
        obj = next(o for o in scene.objects if (o.colour, o.shape) == (sized[0][0].colour, sized[0][0].shape))
        assert sized[0][1].size != obj.size                         # the size it does not have
        # in words (articles aside): a swap keeps the words, an add only adds, a replace changes one
        words = content(t.text())
        for kind in ("swap_obj", "swap_att"):
            assert sorted(content(n[kind].text())) == sorted(words) and n[kind].text() != t.text()
        for kind in ("replace_obj", "replace_att", "replace_rel"):
            other = content(n[kind].text())
            assert len(other) == len(words) and sum(a != b for a, b in zip(words, other)) == 1, kind
        assert content(add.text())[:len(words)] == words and content(add.text())[len(words)] == "and"
        extra = content(att.text())
        assert len(extra) == len(words) + 1 and [w for w in extra if w not in OTHER_SIZE] == words
        # the true claim holds of the scene, no negative does
        assert holds(t, scene) and not any(holds(c, scene) for c in n.values())
    assert set(relations) == {"left", "right", "above", "below"}


def test_the_true_caption_s_facts_are_in_the_pixels():
    """At 64 px, as the scene tests read them (at 48 px a small ring's outline can blur off every
    exact palette colour, in training scenes alike)."""
    for it in probe_items(seed=0, n=60, image_size=64):
        arr = pixels(it.image)
        names, exact = nearest_palette(arr, it.scene.background)
        centroid = {}
        for m in (it.true.subject, it.true.object):
            o = next(o for o in it.scene.objects if m.matches(o))
            ys, xs = cell_slices(arr.shape[0], o.row, o.col)
            cell = names[ys, xs]
            fg = Counter(cell[(cell != it.scene.background) & exact[ys, xs]].tolist())
            assert fg.most_common(1)[0][0] == m.colour, (it.index, m, fg)
            yy, xx = np.nonzero(cell == m.colour)
            centroid[m] = (xx.mean() + xs.start, yy.mean() + ys.start)
        (ax, ay), (bx, by) = centroid[it.true.subject], centroid[it.true.object]
        assert {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[it.true.relation]


def test_probe_images_are_their_own_stream_never_training_or_test_scenes():
    src = ScenesSource(n_train=400, n_test=100, image_size=48, languages=["en"])
    seen = {hashlib.sha256(s.image).digest() for s in sc.generate_scenes(src, seed=0)}
    probe = [hashlib.sha256(it.image).digest() for it in probe_items(0, 200, 48)]
    assert len(set(probe)) == 200 and not seen & set(probe)
    assert [it.image for it in probe_items(0, 3, 48)] == [it.image for it in ITEMS[:3]]   # seeded
    assert probe_item(1, 0, 48).image != ITEMS[0].image
    assert not any((o.colour, o.shape) in sc.HELD_OUT_COMBOS for it in ITEMS for o in it.scene.objects)


def model(image_text: dict[bytes, str], size: int = 48) -> EvalModel:
    vision = OracleVision(image_text.items(), size)
    return EvalModel("oracle", vision.encode_image, vision.pooled_features,
                     lambda t, s: oracle_text(t), size, batch_size=16)


def test_accuracy_counts_pairs_won_and_ties_lose():
    items = ITEMS[:20]
    right = accuracy(model({it.image: it.true.text() for it in items}), items, "short")
    assert set(right) == {f"compositional/{k}" for k in KINDS}
    assert all(m == {"accuracy": 100.0, "chance_accuracy": 50.0, "n_pairs": 20.0} for m in right.values())
    # an image that knows a kind's negative instead of its caption loses that kind's pair
    wrong = accuracy(model({it.image: it.negatives["swap_att"].text() for it in items}), items, "short")
    assert wrong["compositional/swap_att"]["accuracy"] == 0.0
    # a model that sees no difference (one vector for every text and image) wins no pair
    same = oracle_text(["one vector"])
    flat = EvalModel("flat", lambda pixels: torch.from_numpy(np.tile(same, (len(pixels), 1))), None,
                     lambda t, s: np.tile(same, (len(t), 1)), 48, batch_size=16)
    assert all(m["accuracy"] == 0.0 for m in accuracy(flat, items, "short").values())


@pytest.mark.parametrize("seed", [0, 3])
def test_each_kind_has_its_negatives_spread(seed):
    sides = Counter()
    for it in probe_items(seed, 40, 48):
        t, neg = it.true, it.negatives["replace_obj"]
        sides["subject" if neg.subject != t.subject else "object"] += 1
    assert sides["subject"] > 5 and sides["object"] > 5
