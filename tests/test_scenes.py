"""The built-in scene generator: determinism, splits, honest test sets, captions true to pixels."""
from __future__ import annotations

import io
import random
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from flame_pipeline.config import ScenesSource
from flame_pipeline.data import scenes as sc
from flame_pipeline.data.scene_lexicon import LANGUAGES

from scene_pixels import cell_slices, nearest_palette, pixels

ALL_LANGS = ["en", "de", "fr", "es", "it", "pt", "nl"]
SRC = ScenesSource(n_train=60, n_test=24, image_size=64, languages=ALL_LANGS,
                   train_foreign_fraction=0.3, hard_negatives=True)


@pytest.fixture(scope="module")
def rows():
    return list(sc.generate_scenes(SRC, seed=7))


def by_key(rows):
    return {r.key: r for r in rows}


# --------------------------------------------------------------- an English caption parser
COLOURS, SHAPES = sc.SCENE_CLASSES["colour"], sc.SCENE_CLASSES["shape"]
SIZE_WORDS = {"small": "small", "tiny": "small", "little": "small", "large": "large", "big": "large",
              "huge": "large"}
MENTION = re.compile(rf"\b(?:({'|'.join(SIZE_WORDS)}) )?({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")
NUMBERS = {"one": 1, "single": 1, "two": 2, "three": 3, "four": 4}


def _has(text, *words):
    return any(re.search(rf"\b{w}\b", text) for w in words)


def parse_long(text: str) -> dict:
    """Facts of an English long caption, read with this test's own word meanings."""
    facts = {"objects": [], "relations": [], "count": None, "background": None}
    for sent in re.split(r"(?<=\.) ", text):
        s = sent.lower()
        ms = MENTION.findall(s)
        if not ms:
            if _has(s, "background", "backdrop", "canvas"):
                facts["background"] = next(b for b in ("white", "grey", "black") if _has(s, b))
            else:
                facts["count"] = next(n for w, n in NUMBERS.items() if _has(s, w))
        elif len(ms) == 1:
            size, colour, shape = ms[0]
            rest = MENTION.sub("", s)
            row = 0 if _has(rest, "top", "upper") else 2 if _has(rest, "bottom", "lower") else 1
            col = 0 if _has(rest, "left") else 2 if _has(rest, "right") else 1
            facts["objects"].append((SIZE_WORDS[size], colour, shape, (row, col)))
        else:
            assert len(ms) == 2, sent
            rest = MENTION.sub("", s)
            kinds = [k for k, words in (("left", ["left"]), ("right", ["right"]),
                                        ("above", ["above", "higher", "over", "top"]),
                                        ("below", ["below", "under", "beneath", "lower", "bottom"]))
                     if _has(rest, *words)]
            assert len(kinds) == 1, sent
            facts["relations"].append(((ms[0][1], ms[0][2]), kinds[0], (ms[1][1], ms[1][2])))
    return facts


def check_pixels(row) -> dict:
    """Assert every fact of an English long caption against the image; return pixel counts."""
    facts = parse_long(row.long_caption)
    arr = pixels(row.image)
    size = arr.shape[0]
    names, exact = nearest_palette(arr, facts["background"])
    assert names[0, 0] == facts["background"] and len(set(arr[0, 0].tolist())) == 1  # untinted
    assert facts["count"] == len(facts["objects"]) == int(row.labels["count"])
    occupied = {cell for *_, cell in facts["objects"]}
    for r in range(3):
        for c in range(3):
            cell = names[cell_slices(size, r, c)]
            if (r, c) not in occupied:
                assert (cell == facts["background"]).all(), (row.key, r, c)
    area, centroid = {}, {}
    for obj_size, colour, shape, (r, c) in facts["objects"]:
        ys, xs = cell_slices(size, r, c)
        cell = names[ys, xs]
        fg = Counter(cell[(cell != facts["background"]) & exact[ys, xs]].tolist())
        assert fg and fg.most_common(1)[0][0] == colour, (row.key, colour, fg)
        yy, xx = np.nonzero(cell == colour)
        area[(colour, shape)] = (obj_size, shape, len(yy))
        centroid[(colour, shape)] = (xx.mean() + xs.start, yy.mean() + ys.start)
    for a, kind, b in facts["relations"]:
        (ax, ay), (bx, by) = centroid[a], centroid[b]
        assert {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[kind], (row.key, a, kind, b)
    # labels: the main object is the first large one, else the first
    main = next((o for o in facts["objects"] if o[0] == "large"), facts["objects"][0])
    assert (row.labels["colour"], row.labels["shape"]) == (main[1], main[2])
    return area


# --------------------------------------------------------------- tests
def test_same_seed_same_bytes_and_seed_matters(rows):
    again = list(sc.generate_scenes(SRC, seed=7))
    assert again == rows
    other = list(sc.generate_scenes(SRC, seed=8))
    assert [r.image for r in other] != [r.image for r in rows]


def test_training_scenes_do_not_depend_on_n_test():
    small = [r for r in sc.generate_scenes(SRC.model_copy(update={"n_test": 2}), seed=7) if r.split == "train"]
    big = [r for r in sc.generate_scenes(SRC.model_copy(update={"n_test": 9}), seed=7) if r.split == "train"]
    assert small == big and len(small) == SRC.n_train


def test_counts_keys_splits_groups(rows):
    n_langs = len(SRC.languages)
    assert len(rows) == SRC.n_train + SRC.n_test * (n_langs + 1)
    keys = by_key(rows)
    assert len(keys) == len(rows)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    assert [r.key for r in train] == [f"scenes/train/{i:06d}" for i in range(SRC.n_train)]
    assert all(r.source == "scenes" and r.caption and r.long_caption for r in rows)
    for i in range(SRC.n_test):
        group = [r for r in test if r.group == f"scene-{i:06d}"]
        assert sorted(r.key for r in group) == sorted(
            [f"scenes/test/{lang}/{i:06d}" for lang in SRC.languages] + [f"scenes/test-neg/{i:06d}"])
        originals = [r for r in group if "/test/" in r.key]
        assert len({r.image for r in originals}) == 1          # one image, captioned per language
        assert {r.language for r in originals} == set(SRC.languages)
        neg = keys[f"scenes/test-neg/{i:06d}"]
        assert neg.language == "en" and neg.labels["hard_negative_of"] == f"scenes/test/en/{i:06d}"
        assert neg.image != originals[0].image
    for r in rows:
        img = Image.open(io.BytesIO(r.image))
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (64, 64)
        assert set(r.labels) - {"hard_negative_of"} == {"shape", "colour", "count"}
        assert r.labels["shape"] in SHAPES and r.labels["colour"] in COLOURS
        assert r.labels["count"] in sc.SCENE_CLASSES["count"]


def test_foreign_fraction_of_training_captions():
    src = SRC.model_copy(update={"n_train": 400, "n_test": 0, "train_foreign_fraction": 0.25})
    langs = Counter(r.language for r in sc.generate_scenes(src, seed=1))
    assert 0.18 < 1 - langs["en"] / 400 < 0.32
    assert set(langs) == set(ALL_LANGS)
    plain = SRC.model_copy(update={"n_train": 50, "n_test": 0, "train_foreign_fraction": 0.0})
    assert {r.language for r in sc.generate_scenes(plain, seed=1)} == {"en"}


def test_held_out_combos_never_in_training_but_in_test():
    src = SRC.model_copy(update={"n_train": 400, "n_test": 150, "train_foreign_fraction": 0.0,
                                 "languages": ["en"], "image_size": 32})
    seen = {"train": set(), "test": set()}
    for r in sc.generate_scenes(src, seed=3):
        if r.key.startswith("scenes/test-neg/"):
            continue
        seen[r.split] |= {(c, s) for _, c, s in MENTION.findall(r.long_caption.lower())}
    assert not seen["train"] & sc.HELD_OUT_COMBOS
    assert len(seen["train"]) == len(COLOURS) * len(SHAPES) - len(sc.HELD_OUT_COMBOS)
    assert len(seen["test"] & sc.HELD_OUT_COMBOS) >= 6
    assert {c for c, _ in sc.HELD_OUT_COMBOS} == set(COLOURS)
    assert {s for _, s in sc.HELD_OUT_COMBOS} == set(SHAPES)


def test_evaluation_scenes_rebuild_the_generated_test_scenes():
    """``evaluation_scenes`` gives back the scene each test row shows (experiments/held_out.py reads
    held-out pairs through it): the same image and the pairs its caption names."""
    src = SRC.model_copy(update={"n_train": 0, "n_test": 30, "languages": ["en"], "image_size": 32,
                                 "train_foreign_fraction": 0.0})
    shows = Counter()
    for r in sc.generate_scenes(src, seed=5):
        scene, negative = sc.evaluation_scenes(5, "test", int(r.key.rsplit("/", 1)[1]))
        shown = negative if r.key.startswith("scenes/test-neg/") else scene
        assert r.image == sc.render_png(shown, 32)
        pairs = {(o.colour, o.shape) for o in shown.objects}
        assert {(c, s) for _, c, s in MENTION.findall(r.long_caption.lower())} == pairs
        shows[bool(pairs & sc.HELD_OUT_COMBOS)] += 1
    assert shows[True] > 0 and shows[False] > 0


def _markers(code, book="test"):
    words = LANGUAGES[code].markers if book == "test" else LANGUAGES[code].val_markers
    return re.compile("|".join(rf"\b{re.escape(m)}\b" for m in words), re.IGNORECASE)


@pytest.mark.parametrize("book", ["test", "val"])
@pytest.mark.parametrize("code", ALL_LANGS)
def test_test_and_validation_phrasings_are_held_out_of_the_lexicon(code, book):
    lang, marker = LANGUAGES[code], _markers(code, book)
    for template in getattr(lang, book).templates():
        assert marker.search(template), (code, template)
    for other in {"train", "test", "val"} - {book}:
        words = getattr(lang, other)
        for template in [*words.templates(), words.conj, *words.sizes.values()]:
            assert not marker.search(template), (code, other, template)


def test_held_out_phrasings_never_in_training_captions(rows):
    src = SRC.model_copy(update={"n_train": 300, "n_test": 0, "train_foreign_fraction": 0.5})
    train = [r for r in sc.generate_scenes(src, seed=2)]
    assert len({r.language for r in train}) == len(ALL_LANGS)
    for r in train:
        for text in (r.caption, r.long_caption):
            assert not _markers(r.language).search(text), (r.key, text)
            assert not _markers(r.language, "val").search(text), (r.key, text)
    test = [r for r in rows if r.split == "test"]
    for r in test:
        assert _markers(r.language).search(r.long_caption), (r.key, r.long_caption)
        assert not _markers(r.language, "val").search(r.caption + " " + r.long_caption), r.key
    held = sum(bool(_markers(r.language).search(r.caption)) for r in test)
    assert held / len(test) > 0.5


def test_every_english_caption_fact_is_in_the_pixels(rows):
    english = [r for r in rows if r.language == "en"]
    assert len(english) > 60
    areas = [a for r in english for a in check_pixels(r).values()]
    for shape in SHAPES:   # a large object covers more pixels than a small one of its shape
        large = [n for size, s, n in areas if s == shape and size == "large"]
        small = [n for size, s, n in areas if s == shape and size == "small"]
        if large and small:
            assert min(large) > max(small), shape


def test_short_caption_names_the_same_objects(rows):
    for r in rows:
        if r.language != "en":
            continue
        facts = parse_long(r.long_caption)
        short = [(SIZE_WORDS[z], c, s) for z, c, s in MENTION.findall(r.caption.lower())]
        assert short == [o[:3] for o in facts["objects"]], r.key


def test_shapes_are_distinguishable_when_drawn():
    masks = {}
    for shape in SHAPES:
        obj = sc.SceneObject(shape, "red", "large", 1, 1, 0.5, 0.5, 0.4 / 3, sc.RGB["red"])
        arr = np.asarray(sc.draw_scene(sc.Scene("white", sc.BACKGROUND_RGB["white"], (obj,)), 64))
        masks[shape] = (np.abs(arr.astype(int) - sc.BACKGROUND_RGB["white"]).sum(-1) > 100)
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.8, (a, b, iou)
    assert not masks["ring"][32, 32] and masks["circle"][32, 32]   # a ring has a hole


def test_hard_negative_differs_in_exactly_one_fact(rows):
    keys = by_key(rows)
    kinds = Counter()
    for i in range(SRC.n_test):
        orig = parse_long(keys[f"scenes/test/en/{i:06d}"].long_caption)
        neg_row = keys[f"scenes/test-neg/{i:06d}"]
        neg = parse_long(neg_row.long_caption)
        check_pixels(neg_row)
        assert (orig["count"], orig["background"]) == (neg["count"], neg["background"])
        a, b = orig["objects"], neg["objects"]
        changed = [(x, y) for x, y in zip(a, b) if x != y]
        if all(x[:3] == y[:3] for x, y in zip(a, b)):
            assert all(y[3] == (x[3][0], 2 - x[3][1]) for x, y in zip(a, b)), i
            assert any(x[3][1] != 1 for x in a)
            kinds["mirror"] += 1
        else:
            assert len(changed) == 1, i
            (x, y), = changed
            diff = [k for k in range(4) if x[k] != y[k]]
            assert diff in ([1], [2]), (x, y)
            kinds["colour" if diff == [1] else "shape"] += 1
    assert set(kinds) == {"mirror", "colour", "shape"}, kinds


def test_long_captions_are_long(rows):
    """Words x 1.3 approximates LLM tokens; most long captions pass CLIP's 77-token window."""
    for code in ALL_LANGS:
        long = [r for r in rows if r.language == code and r.split == "test"]
        frac = np.mean([len(r.long_caption.split()) * 1.3 > 77 for r in long])
        assert frac >= 0.5, (code, frac)
        assert all(len(r.long_caption) > 2 * len(r.caption) for r in long)


# each language's own words for colours and shapes (all inflected forms used)
WORDS = {
    "de": ({"red": "rot", "orange": "orangefarben", "yellow": "gelb", "green": "grün", "blue": "blau",
            "purple": "violett", "pink": "rosafarben", "brown": "braun"},
           {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "star": "Stern",
            "cross": "Kreuz", "ring": "Ring", "diamond": "Raute", "heart": "Herz(en)?"}, r"(e|er|es|en)?"),
    "fr": ({"red": "rouge", "orange": "orange", "yellow": "jaune", "green": "verte?", "blue": "bleue?",
            "purple": "violet(te)?", "pink": "rose", "brown": "marron"},
           {"circle": "cercle", "square": "carré", "triangle": "triangle", "star": "étoile",
            "cross": "croix", "ring": "anneau", "diamond": "losange", "heart": "cœur"}, ""),
    "es": ({"red": "roj[oa]", "orange": "naranja", "yellow": "amarill[oa]", "green": "verde",
            "blue": "azul", "purple": "morad[oa]", "pink": "rosa", "brown": "marrón"},
           {"circle": "círculo", "square": "cuadrado", "triangle": "triángulo", "star": "estrella",
            "cross": "cruz", "ring": "anillo", "diamond": "rombo", "heart": "corazón"}, ""),
    "it": ({"red": "ross[oa]", "orange": "arancione", "yellow": "giall[oa]", "green": "verde",
            "blue": "blu", "purple": "viola", "pink": "rosa", "brown": "marrone"},
           {"circle": "cerchio", "square": "quadrato", "triangle": "triangolo", "star": "stella",
            "cross": "croce", "ring": "anello", "diamond": "rombo", "heart": "cuore"}, ""),
    "pt": ({"red": "vermelh[oa]", "orange": "laranja", "yellow": "amarel[oa]", "green": "verde",
            "blue": "azul", "purple": "rox[oa]", "pink": "rosa", "brown": "marrom"},
           {"circle": "círculo", "square": "quadrado", "triangle": "triângulo", "star": "estrela",
            "cross": "cruz", "ring": "anel", "diamond": "losango", "heart": "coração"}, ""),
    "nl": ({"red": "ro(o|)de?", "orange": "oranje", "yellow": "ge(e|)le?", "green": "groene?",
            "blue": "blauwe?", "purple": "paarse?", "pink": "roze", "brown": "bruine?"},
           {"circle": "cirkel", "square": "vierkant", "triangle": "driehoek", "star": "ster",
            "cross": "kruis", "ring": "ring", "diamond": "ruit", "heart": "hart"}, ""),
}


def _found(table, text, suffix=""):
    return {k for k, pat in table.items() if re.search(rf"\b(?:{pat}){suffix}\b", text, re.IGNORECASE)}


@pytest.mark.parametrize("code", sorted(WORDS))
def test_each_language_names_the_scene_in_its_own_words(rows, code):
    keys = by_key(rows)
    colours, shapes, suffix = WORDS[code]
    for i in range(SRC.n_test):
        facts = parse_long(keys[f"scenes/test/en/{i:06d}"].long_caption)
        row = keys[f"scenes/test/{code}/{i:06d}"]
        for text in (row.caption, row.long_caption):
            assert _found(colours, text, suffix) == {o[1] for o in facts["objects"]}, (row.key, text)
            assert _found(shapes, text) == {o[2] for o in facts["objects"]}, (row.key, text)
            assert not re.search(r"\b(the|and|of|there)\b", text), text
            if code == "fr":
                assert not re.search(r"\b(de|que) une?\b", text), text   # elided: d'un, qu'une


def test_foreign_training_captions_match_their_scene():
    src = SRC.model_copy(update={"n_train": 120, "n_test": 0, "train_foreign_fraction": 1.0})
    en = {r.key: r for r in sc.generate_scenes(src.model_copy(update={"train_foreign_fraction": 0.0}), seed=4)}
    foreign = [r for r in sc.generate_scenes(src, seed=4)]
    assert all(r.language != "en" for r in foreign)
    for r in foreign:
        assert r.image == en[r.key].image    # the caption language does not change the scene
        colours, shapes, suffix = WORDS[r.language]
        facts = parse_long(en[r.key].long_caption)
        assert _found(colours, r.long_caption, suffix) == {o[1] for o in facts["objects"]}, r.long_caption
        assert _found(shapes, r.long_caption) == {o[2] for o in facts["objects"]}, r.long_caption


def test_bad_language_settings_fail_at_call_time():
    with pytest.raises(ValueError, match="unsupported caption language 'xx'"):
        sc.generate_scenes(SRC.model_copy(update={"languages": ["en", "xx"]}), seed=0)
    with pytest.raises(ValueError, match="must include 'en'"):
        sc.generate_scenes(SRC.model_copy(update={"languages": ["de", "fr"]}), seed=0)
    with pytest.raises(ValueError, match="repeat"):
        sc.generate_scenes(SRC.model_copy(update={"languages": ["en", "de", "de"]}), seed=0)
    with pytest.raises(ValueError, match="besides 'en'"):
        sc.generate_scenes(SRC.model_copy(update={"languages": ["en"], "train_foreign_fraction": 0.1}), seed=0)


def test_class_names():
    assert sc.SCENE_CLASSES["count"] == ["1", "2", "3", "4"]
    assert len(set(COLOURS)) == len(set(SHAPES)) == 8
    assert sc.class_text("shape", "circle") == "a circle"
    assert sc.class_text("colour", "orange") == "an orange object"
    assert sc.class_text("count", "1") == "one object"
    assert sc.class_text("count", "3") == "three objects"
    with pytest.raises(ValueError, match="no class"):
        sc.class_text("shape", "hexagon")


def test_hard_negatives_can_be_switched_off():
    src = SRC.model_copy(update={"n_train": 2, "n_test": 3, "hard_negatives": False})
    out = list(sc.generate_scenes(src, seed=0))
    assert len(out) == 2 + 3 * len(ALL_LANGS)
    assert not any(r.key.startswith("scenes/test-neg/") for r in out)


def test_scene_sampler_respects_the_grid():
    for i in range(300):
        scene = sc.sample_scene(random.Random(i), held_out=True)
        cells = [(o.row, o.col) for o in scene.objects]
        assert 1 <= len(cells) <= 4 and len(set(cells)) == len(cells)
        assert len({(o.colour, o.shape) for o in scene.objects}) == len(cells)
        for o in scene.objects:   # inside its own cell, with a margin: no overlaps, no clipping
            lo_x, lo_y = o.col / 3, o.row / 3
            assert lo_x + 0.04 / 3 < o.cx - o.r and o.cx + o.r < lo_x + 1 / 3 - 0.04 / 3
            assert lo_y + 0.04 / 3 < o.cy - o.r and o.cy + o.r < lo_y + 1 / 3 - 0.04 / 3


def test_validation_scenes_are_neither_training_nor_test_scenes(rows):
    val = list(sc.validation_scenes(SRC, seed=7, n=30))
    assert val == list(sc.validation_scenes(SRC, seed=7, n=30))          # deterministic
    assert [r.key for r in val] == [key for i in range(30) for key in
                                    [f"scenes/val/{lang}/{i:06d}" for lang in SRC.languages]
                                    + [f"scenes/val-neg/{i:06d}"]]   # a hard negative, as in test
    assert {r.split for r in val} == {"val"}
    images = {r.image for r in val}
    assert len(images) == 60 and not images & {r.image for r in rows}    # scenes of their own
    english = {r.key.split("/")[-1]: r for r in val if r.key.startswith("scenes/val/en/")}
    for r in val:   # no held-out pair, and phrasings of their own: neither training's nor the test's
        text = r.caption + " " + r.long_caption
        assert not _markers(r.language).search(text), (r.key, text)
        assert _markers(r.language, "val").search(r.long_caption), (r.key, r.long_caption)
        original = english[r.key.split("/")[-1]]
        facts = parse_long(original.long_caption)
        if "hard_negative_of" in r.labels:   # its own facts, true to its pixels; not the original's
            assert r.labels["hard_negative_of"] == original.key and r.long_caption != original.long_caption
            neg = check_pixels(r)
            assert not set(neg) & sc.HELD_OUT_COMBOS
        elif r.language == "en":
            check_pixels(r)
            assert not {(o[1], o[2]) for o in facts["objects"]} & sc.HELD_OUT_COMBOS
        else:
            colours, shapes, suffix = WORDS[r.language]
            assert _found(colours, text, suffix) == {o[1] for o in facts["objects"]}, (r.key, text)
            assert _found(shapes, text) == {o[2] for o in facts["objects"]}, (r.key, text)
    held = sum(bool(_markers(r.language, "val").search(r.caption)) for r in val)
    assert held / len(val) > 0.5
