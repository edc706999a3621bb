"""Packaged real data: Fashion-MNIST, Noto emoji with multilingual names, OpenClipart."""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import emoji
import pytest
from PIL import Image

from download_support import png_bytes
from flame_pipeline.config import EmojiSource, FashionMnistSource, OpenClipartSource
from flame_pipeline.data.packaged import (
    FASHION_CLASSES, _font, emoji_categories, iter_emoji, iter_fashion_mnist, iter_openclipart, render_emoji,
    title_from_filename)

FMNIST = Path(FashionMnistSource().root)
FONT = EmojiSource().font
OPENCLIPART = Path(OpenClipartSource().root)
needs = lambda path, pkg: pytest.mark.skipif(not Path(path).exists(), reason=f"Debian {pkg} not installed")  # noqa: E731


def first_labels(name: str, n: int) -> list[int]:
    with gzip.open(FMNIST / name) as f:
        return list(f.read(8 + n)[8:])


@needs(FMNIST, "dataset-fashion-mnist")
def test_fashion_mnist_rows_follow_the_official_files():
    rows = list(iter_fashion_mnist(FashionMnistSource(n_train=4, n_test=3)))
    assert [r.key for r in rows] == [f"fashion_mnist/train/{i:05d}" for i in range(4)] + \
        [f"fashion_mnist/test/{i:05d}" for i in range(3)]
    assert [r.split for r in rows] == ["train"] * 4 + ["test"] * 3
    labels = first_labels("train-labels-idx1-ubyte.gz", 4) + first_labels("t10k-labels-idx1-ubyte.gz", 3)
    assert [r.labels["class"] for r in rows] == [FASHION_CLASSES[i][0] for i in labels]
    assert [r.caption for r in rows] == [f"a photo of {FASHION_CLASSES[i][1]}" for i in labels]
    im = Image.open(io.BytesIO(rows[0].image))
    assert im.size == (28, 28) and im.mode == "L"
    with gzip.open(FMNIST / "train-images-idx3-ubyte.gz") as f:
        assert im.tobytes() == f.read(16 + 784)[16:]
    later = list(iter_fashion_mnist(FashionMnistSource(n_train=4, n_test=3), start=3))
    assert [(r.key, r.image) for r in later] == [(r.key, r.image) for r in rows[3:]]
    with pytest.raises(ValueError, match="holds 10000 records; 10001 were asked for"):
        list(iter_fashion_mnist(FashionMnistSource(n_train=0, n_test=10_001)))


@needs(FONT, "fonts-noto-color-emoji")
def test_emoji_rows_in_several_languages():
    src = EmojiSource(limit=3, languages=["en", "de", "fr"], test_fraction=0.5)
    rows = list(iter_emoji(src))
    assert len(rows) == 9
    for group in range(3):
        same = rows[3 * group:3 * group + 3]
        assert [r.language for r in same] == ["en", "de", "fr"]
        assert len({r.group for r in same}) == 1 and len({r.split for r in same}) == 1
        assert len({r.image for r in same}) == 1
        ch = "".join(chr(int(c, 16)) for c in same[0].group.split("/")[1].split("-"))
        assert same[1].caption == emoji.EMOJI_DATA[ch]["de"].strip(":").replace("_", " ")
        assert same[0].labels["emoji"] == same[0].caption
    im = Image.open(io.BytesIO(rows[0].image))
    assert im.size == (136, 128) and len(im.convert("RGB").getcolors(maxcolors=1 << 16)) > 20
    assert [r.key for r in iter_emoji(src, start=4)] == [r.key for r in rows[4:]]
    with pytest.raises(ValueError, match="unknown language"):
        list(iter_emoji(EmojiSource(languages=["xx"])))


def test_emoji_categories():
    cats = emoji_categories()
    assert cats[(0x1F947,)] == "Activities"                       # 1st place medal
    assert cats[(0x1F44D, 0x1F3FD)] == "People & Body"            # thumbs up, medium skin tone
    assert cats[(0x30, 0x20E3)] == "Symbols"                      # keycap 0, FE0F dropped
    assert set(cats.values()) >= {"Smileys & Emotion", "Animals & Nature", "Food & Drink", "Flags"}


@needs(FONT, "fonts-noto-color-emoji")
def test_emoji_missing_from_the_font_is_detected():
    font = _font(FONT)
    assert render_emoji(font, "\U0001F947") is not None           # 1st place medal
    assert render_emoji(font, "\U0001FAEB") is None               # Emoji 16: drawn blank
    assert render_emoji(font, "\U0001F1E8\U0001F1F6") is None     # Sark: the unknown-flag glyph
    assert render_emoji(font, "\U0001F947\U0001F948") is None     # two glyphs


@needs(OPENCLIPART / "png", "openclipart-png")
def test_openclipart_from_the_debian_package():
    rows = list(iter_openclipart(OpenClipartSource(limit=4)))
    assert len(rows) == 4 and all(r.image.startswith(b"\x89PNG") for r in rows)
    for r in rows:
        rel = Path(r.source_ref).relative_to(OPENCLIPART / "png")
        assert r.key == "openclipart/" + rel.with_suffix("").as_posix()
        assert r.labels == {"category": rel.parts[0]}
        assert r.caption == title_from_filename(rel) and r.caption


def test_openclipart_svg_metadata(tmp_path):
    (tmp_path / "png/animals").mkdir(parents=True)
    (tmp_path / "svg/animals").mkdir(parents=True)
    (tmp_path / "png/animals/tabby_cat_jane_doe_01.png").write_bytes(png_bytes(1))
    (tmp_path / "png/animals/broken_01.png").write_bytes(png_bytes(2))
    (tmp_path / "png/plain_02.png").write_bytes(png_bytes(3))
    (tmp_path / "svg/animals/tabby_cat_jane_doe_01.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:cc="http://creativecommons.org/ns#">'
        '<metadata><rdf:RDF><cc:Work>'
        '<dc:creator><cc:Agent><dc:title>Jane Doe</dc:title></cc:Agent></dc:creator>'
        '<dc:title>Tabby  cat</dc:title>'
        '<dc:description>A striped &amp;quot;tabby&amp;quot; cat sitting.</dc:description>'
        '<dc:subject><rdf:Bag><rdf:li>cat</rdf:li><rdf:li>animal</rdf:li></rdf:Bag></dc:subject>'
        '</cc:Work></rdf:RDF></metadata></svg>')
    (tmp_path / "svg/animals/broken_01.svg").write_text("<svg><unclosed></svg>")
    (tmp_path / "png/animals/dog_01.png").write_bytes(png_bytes(4))
    (tmp_path / "svg/animals/dog_01.svg").write_text(
        '<svg xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:cc="http://web.resource.org/cc/">'
        '<metadata><cc:Work><dc:title>Dog</dc:title><dc:description>dog.</dc:description></cc:Work>'
        '</metadata></svg>')
    rows = {r.key: r for r in iter_openclipart(OpenClipartSource(root=str(tmp_path), limit=10))}
    cat = rows["openclipart/animals/tabby_cat_jane_doe_01"]
    assert (cat.caption, cat.long_caption) == ("Tabby cat", 'A striped "tabby" cat sitting. Keywords: cat, animal.')
    assert cat.labels == {"category": "animals"} and cat.reject_reason is None
    assert rows["openclipart/animals/broken_01"].reject_reason == "bad svg metadata"
    dog = rows["openclipart/animals/dog_01"]
    assert (dog.caption, dog.long_caption) == ("Dog", None)      # a description repeating the title adds nothing
    plain = rows["openclipart/plain_02"]
    assert (plain.caption, plain.long_caption, plain.labels) == ("plain", None, {})
    assert title_from_filename(Path("chemistry_flask_matthew__02.png")) == "chemistry flask matthew"
