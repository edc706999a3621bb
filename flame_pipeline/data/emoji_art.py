"""Emoji artwork by several designers, named by people in many languages: a real image-text
corpus that installs from the npm registry (``requirements-npm.txt``, put in place by
``scripts/setup.sh`` under ``packages/npm/``; nothing is fetched at run time).

- Images: the 64 px PNGs of ``emoji-datasource-{apple,google,twitter,facebook}`` (MIT) and
  OpenMoji's SVGs (``openmoji``, CC BY-SA 4.0), drawn with cairosvg at 72 px.
- Text: ``emojibase-data``'s CLDR annotations: a name (``label``) per emoji in 28 locales,
  English keywords (``tags``), and the Unicode group and subgroup.

A **concept** is one emoji of ``emojibase-data`` (its hexcode; skin-tone variants are nested
under their base there and not used) that is not a component (skin-tone swatches, hair) and that
every configured designer (training designers and the held-out one) has drawn. Concepts are
ordered by ``sha256("emoji_art/" + hexcode)``; the first ``n_test`` are the **test** concepts, the
next ``n_val`` the **validation** concepts, the others (the first ``n_train`` of them, when set)
the **training** concepts. Every image of a concept lands on its concept's side, so a test
concept is never seen in training in any style, and the held-out designer is never seen at all.

Rows (``group`` = ``emoji_art/<hexcode>``; labels ``group`` and ``subgroup`` in English):
- training concept x training designer: the English name as caption, the long caption below,
  language ``en``, split ``train``, source ``emoji_art``;
- validation / test concept x designer x locale: the concept's name in that locale as caption,
  split ``val`` / ``test``; source ``emoji_art`` for the training designers' images (held-out
  concepts) and ``emoji_art_<designer>`` for the held-out designer's (held-out style).

Long caption (English, deterministic): ``"<name>: an emoji from the <group> group
(<subgroup>). Keywords: <tag>, <tag>, ...."``, the tags in emojibase's order.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Iterator

from flame_pipeline.config import EmojiArtSource
from flame_pipeline.data.sample import RawSample

SOURCE = "emoji_art"
NAMES_PACKAGE = "emojibase-data"
OPENMOJI_SIZE = 72          # OpenMoji's own PNG export size
COMPONENT_GROUP = "component"


@dataclass(frozen=True)
class Concept:
    hexcode: str
    names: dict[str, str]        # locale -> name
    tags: tuple[str, ...]        # English keywords
    group: str                   # English group name ("animals & nature")
    subgroup: str                # English subgroup name ("mammals")

    @property
    def key(self) -> str:
        return f"{SOURCE}/{self.hexcode}"


def package_dir(root: str | Path, name: str) -> Path:
    """The one installed version of an npm package under ``root`` (``<name>@<version>/``)."""
    found = sorted(p for p in Path(root).glob(f"{name}@*") if (p / ".complete").is_file())
    if len(found) != 1:
        what = "not installed" if not found else f"installed {len(found)} times ({[p.name for p in found]})"
        raise FileNotFoundError(f"npm package {name} is {what} under {root} "
                                "(bash scripts/setup.sh installs requirements-npm.txt)")
    return found[0]


def designer_package(designer: str) -> str:
    return "openmoji" if designer == "openmoji" else f"emoji-datasource-{designer}"


def _bare(hexcode: str) -> str:
    """Codepoints without variation selectors, lower case: lists disagree about FE0F."""
    return "-".join(c for c in hexcode.lower().split("-") if c != "fe0f")


@cache
def artwork(root: str, designer: str) -> dict[str, Path]:
    """Bare codepoints -> the designer's image file (PNG, or SVG for OpenMoji)."""
    base = package_dir(root, designer_package(designer))
    folder = base / "color" / "svg" if designer == "openmoji" else base / "img" / designer / "64"
    files = sorted(folder.glob("*.svg" if designer == "openmoji" else "*.png"))
    if not files:
        raise FileNotFoundError(f"no {designer} artwork in {folder}")
    return {_bare(f.stem): f for f in files}


def _messages(base: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """Group and subgroup number -> {"key": ..., "message": English name}."""
    doc = json.loads((base / "en" / "messages.json").read_text(encoding="utf-8"))
    return {g["order"]: g for g in doc["groups"]}, {g["order"]: g for g in doc["subgroups"]}


@cache
def concepts(root: str, locales: tuple[str, ...], designers: tuple[str, ...]) -> tuple[Concept, ...]:
    """Every concept (module docstring) in hash order, with its names in ``locales``."""
    base = package_dir(root, NAMES_PACKAGE)
    groups, subgroups = _messages(base)
    by_locale = {}
    for locale in locales:
        path = base / locale / "data.json"
        if not path.is_file():
            raise FileNotFoundError(f"{NAMES_PACKAGE} has no locale {locale!r} ({path} missing)")
        by_locale[locale] = {e["hexcode"]: e.get("label") for e in json.loads(path.read_text(encoding="utf-8"))}
    art = [artwork(root, d) for d in designers]
    out = []
    for entry in json.loads((base / "en" / "data.json").read_text(encoding="utf-8")):
        hexcode, group = entry["hexcode"], entry.get("group")
        if group is None or groups[group]["key"] == COMPONENT_GROUP or not entry.get("label"):
            continue
        if any(_bare(hexcode) not in a for a in art):
            continue
        names = {loc: by_locale[loc].get(hexcode) for loc in locales}
        out.append(Concept(hexcode, {k: v for k, v in names.items() if v}, tuple(entry.get("tags", [])),
                           groups[group]["message"], subgroups[entry["subgroup"]]["message"]))
    return tuple(sorted(out, key=lambda c: hashlib.sha256(c.key.encode()).hexdigest()))


def styles(src: EmojiArtSource) -> tuple[str, ...]:
    """Every designer drawn from: the training designers, then the held-out one."""
    return (*src.designers, *([src.held_out_designer] if src.held_out_designer else []))


def split_concepts(src: EmojiArtSource) -> dict[str, list[Concept]]:
    """``test``, ``val`` and ``train`` concepts (module docstring)."""
    ordered = concepts(src.root, tuple(src.locales), styles(src))
    if len(ordered) <= src.n_test + src.n_val:
        raise ValueError(f"emoji_art: {len(ordered)} concepts, not more than n_test + n_val = "
                         f"{src.n_test + src.n_val}")
    train = ordered[src.n_test + src.n_val:]
    return {"test": list(ordered[:src.n_test]), "val": list(ordered[src.n_test:src.n_test + src.n_val]),
            "train": list(train if src.n_train is None else train[:src.n_train])}


def long_caption(c: Concept) -> str:
    name = c.names["en"]
    keywords = f" Keywords: {', '.join(c.tags)}." if c.tags else ""
    return f"{name}: an emoji from the {c.group} group ({c.subgroup}).{keywords}"


@dataclass(frozen=True)
class _Row:
    concept: Concept
    designer: str
    split: str
    locale: str


def _rows(src: EmojiArtSource) -> list[_Row]:
    parts = split_concepts(src)
    rows = [_Row(c, d, "train", "en") for c in parts["train"] for d in src.designers]
    for split in ("val", "test"):
        rows += [_Row(c, d, split, loc) for c in parts[split] for d in styles(src)
                 for loc in src.locales if loc in c.names]
    return rows


@lru_cache(maxsize=2)   # the rows of one drawing (one per locale) come one after another
def image_bytes(root: str, designer: str, hexcode: str) -> bytes:
    """The designer's drawing of ``hexcode`` as image bytes (OpenMoji's SVG drawn at 72 px)."""
    path = artwork(root, designer)[_bare(hexcode)]
    if path.suffix == ".svg":
        import cairosvg  # only OpenMoji needs it (and libcairo)

        return cairosvg.svg2png(url=str(path), output_width=OPENMOJI_SIZE, output_height=OPENMOJI_SIZE)
    return path.read_bytes()


def iter_emoji_art(src: EmojiArtSource, start: int = 0) -> Iterator[RawSample]:
    held_out = src.held_out_designer
    for row in _rows(src)[start:]:
        c = row.concept
        source = f"{SOURCE}_{row.designer}" if row.designer == held_out else SOURCE
        yield RawSample(
            key=f"{c.key}/{row.designer}" + ("" if row.split == "train" else f"/{row.locale}"),
            source=source, source_ref=f"{designer_package(row.designer)}#{c.hexcode}",
            image=image_bytes(src.root, row.designer, c.hexcode), caption=c.names[row.locale],
            long_caption=long_caption(c) if row.split == "train" else None, language=row.locale,
            split=row.split, labels={"group": c.group, "subgroup": c.subgroup}, group=c.key)
