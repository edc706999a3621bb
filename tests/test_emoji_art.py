"""The emoji_art source on a slice of the real npm packages (installed by scripts/setup.sh)."""
from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from flame_pipeline.config import EmojiArtSource
from flame_pipeline.data.emoji_art import (
    SOURCE, artwork, iter_emoji_art, long_caption, package_dir, split_concepts)

ROOT = Path(__file__).resolve().parents[1] / EmojiArtSource().root
installed = pytest.mark.skipif(not ROOT.is_dir(), reason="npm data packages not installed "
                               "(bash scripts/setup.sh)")
SMALL = dict(root=str(ROOT), locales=["en", "de", "ja"], n_test=3, n_val=2, n_train=4, image_size=32)


def emojibase(locale: str) -> dict[str, dict]:
    path = package_dir(ROOT, "emojibase-data") / locale / "data.json"
    return {e["hexcode"]: e for e in json.loads(path.read_text(encoding="utf-8"))}


@installed
def test_concepts_are_split_by_their_hash_and_every_style_stays_on_its_side():
    src = EmojiArtSource(**SMALL)
    parts = split_concepts(src)
    assert [len(parts[s]) for s in ("test", "val", "train")] == [3, 2, 4]
    ordered = parts["test"] + parts["val"] + parts["train"]
    digests = [hashlib.sha256(f"emoji_art/{c.hexcode}".encode()).hexdigest() for c in ordered]
    assert digests == sorted(digests)                   # the lowest hashes are test, then val
    rows = list(iter_emoji_art(src))
    side = {r.group: r.split for r in rows}
    assert all(side[r.group] == r.split for r in rows)  # one side per concept, whatever the style
    train = [r for r in rows if r.split == "train"]
    assert len(train) == 4 * 4                           # 4 concepts x the 4 training designers
    assert {r.language for r in train} == {"en"} and all(r.long_caption for r in train)
    assert not any("openmoji" in r.key for r in train)  # the held-out designer is never trained on
    # val and test: each concept in each of the 5 styles and each of its locales
    assert Counter(r.split for r in rows) == {"train": 16, "val": 2 * 5 * 3, "test": 3 * 5 * 3}
    assert {r.source for r in rows if r.split == "test"} == {SOURCE, f"{SOURCE}_openmoji"}
    assert len({r.key for r in rows}) == len(rows)


@installed
def test_rows_carry_the_names_people_wrote_and_the_designers_drawings():
    src = EmojiArtSource(**SMALL)
    rows = list(iter_emoji_art(src))
    names = {loc: emojibase(loc) for loc in src.locales}
    for r in rows:
        hexcode = r.group.split("/")[1]
        assert r.caption == names[r.language][hexcode]["label"]
        designer = r.key.split("/")[2]
        im = Image.open(io.BytesIO(r.image))
        if designer == "openmoji":                       # drawn from its SVG at 72 px
            assert im.size == (72, 72)
        else:                                            # the package's own 64 px PNG
            assert im.size == (64, 64) and r.image == artwork(str(ROOT), designer)[
                "-".join(c for c in hexcode.lower().split("-") if c != "fe0f")].read_bytes()
        assert im.convert("RGBA").getchannel("A").getextrema()[1] == 255   # something is drawn
    first = rows[0]
    entry = names["en"][first.group.split("/")[1]]
    assert first.long_caption.startswith(f"{entry['label']}: an emoji from the ")
    assert first.long_caption.endswith("Keywords: " + ", ".join(entry["tags"]) + ".")
    assert set(first.labels) == {"group", "subgroup"}


@installed
def test_a_resumed_source_yields_the_same_rows_after_start():
    src = EmojiArtSource(**SMALL)
    rows = list(iter_emoji_art(src))
    later = list(iter_emoji_art(src, start=20))
    assert [(r.key, r.caption, r.image) for r in later] == [(r.key, r.caption, r.image) for r in rows[20:]]


@installed
def test_long_caption_rule():
    concept = split_concepts(EmojiArtSource(**SMALL))["train"][0]
    text = long_caption(concept)
    assert text == (f"{concept.names['en']}: an emoji from the {concept.group} group "
                    f"({concept.subgroup}). Keywords: {', '.join(concept.tags)}.")


def test_config_refuses_a_designer_both_trained_on_and_held_out():
    with pytest.raises(ValueError, match="also in designers"):
        EmojiArtSource(designers=["apple", "openmoji"])
    with pytest.raises(ValueError, match="must include 'en'"):
        EmojiArtSource(locales=["de"])


def test_missing_packages_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="emojibase-data is not installed .*setup.sh"):
        split_concepts(EmojiArtSource(root=str(tmp_path)))
