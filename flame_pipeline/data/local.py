"""Local image-text sources: WebDataset tar shards and a folder of images with captions.

WebDataset: members ``<key>.<jpg|jpeg|png|webp>`` with ``<key>.txt`` (the caption) or
``<key>.json`` (its ``"caption"``); consecutive members sharing a key form one sample. Tars are
read as streams and never extracted: a member whose name is absolute or contains ``..``, or
that is not a regular file, rejects its sample, and so does a member extension repeated within
one sample. A sample's key is prefixed by its tar's stem, with as many parent folders as tell
tars of the same stem apart (``a/00000``, ``b/00000``); a key seen before in the source (in the
same tar, or the same tar listed twice) is a rejected row keyed ``<key>#<n>``.

Folder: every image file (recursively) with the caption in the ``.txt`` beside it of the same
stem; a caption file without an image is a row too ("missing image"); an image or caption that
is a link leading out of the folder rejects its row unread. In both, a file over ``max_bytes``
rejects its sample ("too large") without being read.

The sample's ``.json`` (WebDataset) or the image's sidecar ``<stem>.json`` (folder) may carry
recaptions, ``short_caption`` and ``long_caption`` (``recaptions.py``; a value that is not a
string rejects the sample, "bad recaption"), and the group: with ``group_key`` set, that key's
value becomes the sample's ``group``, which curation keeps on one side of the split (a string
or a number; absent or null: no group; a list, object or boolean rejects the sample, "bad
group"). JSON that does not parse, or is not an object, rejects the sample, "bad json".

The sample key a recaption table joins on (``sample_key``): a WebDataset sample's own key
(``__key__``, without the tar's stem), a folder image's path relative to the folder without
its suffix (``sub/0001``).
"""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from flame_pipeline.config import FolderSource, WebDatasetSource
from flame_pipeline.data.recaptions import json_recaptions
from flame_pipeline.data.sample import RawSample

TAR_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
FOLDER_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # WebDataset: key = path up to the first dot of the basename


def unsafe_member_name(name: str) -> bool:
    """Absolute, climbing out with ``..``, or using Windows separators: never a sample's name."""
    p = PurePosixPath(name)
    return not name or p.is_absolute() or ".." in p.parts or "\\" in name


def _readable(name: str) -> str:
    """A file or member name as valid UTF-8 text (undecodable bytes shown as escapes)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _split_key(name: str) -> tuple[str, str]:
    m = _KEY_EXT.match(name)
    return (m.group(1), m.group(2).lower()) if m else (name, "")


def _json_object(raw: bytes | None) -> tuple[dict, str | None]:
    """A sample's JSON object ({} when there is none), or ({}, "bad json")."""
    if raw is None:
        return {}, None
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}, "bad json"
    return (meta, None) if isinstance(meta, dict) else ({}, "bad json")


def _json_fields(meta: dict, group_key: str | None) -> tuple[dict, str | None]:
    """The RawSample fields a sample's JSON object gives (recaptions, group), or the reason it
    rejects the sample."""
    fields, reason = json_recaptions(meta)
    value = meta.get(group_key) if group_key is not None else None
    if reason is not None or value is None or value == "":
        return fields, reason
    if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return dict(fields, group=str(value)), None
    return fields, "bad group"


def _tar_sample(tar_stem: str, tar_path: Path, key: str, members: dict[str, bytes],
                reason: str | None, group_key: str | None, first: str | None = None,
                copy: int = 1) -> RawSample:
    """One sample; ``first`` is where a duplicate key was seen before (its ``copy``-th)."""
    full_key = f"webdataset/{tar_stem}/{key}" + (f"#{copy}" if first else "")
    image_ext = next((e for e in TAR_IMAGE_EXTS if e in members), None)
    if first:
        reason = "duplicate key"
    meta, json_reason = _json_object(members.get("json"))
    caption = members.get("txt")
    if caption is None:
        caption = meta.get("caption") if isinstance(meta.get("caption"), str) else None
    reason = reason or json_reason
    if reason is None and image_ext is None:
        reason = "missing image"
    if reason is None and caption is None:
        reason = "missing caption"
    fields: dict = {}
    if reason is None:
        fields, reason = _json_fields(meta, group_key)
    ref = f"{tar_path}:{key}.{image_ext or '*'}" + (f" (duplicate of {first})" if first else "")
    return RawSample(
        key=full_key, source="webdataset", source_ref=ref,
        image=members.get(image_ext) if reason is None else None, caption=caption,
        sample_key=key, reject_reason=reason, **(fields if reason is None else {}))


def _open_tar(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise FileNotFoundError(f"webdataset shard {path} not found")
    try:
        return tarfile.open(path, mode="r|*")   # a stream: never extracted, never seeks
    except tarfile.ReadError as err:
        raise ValueError(f"{path}: not a readable tar file ({err})") from None


def _shard_names(paths: list[str]) -> list[str]:
    """Each tar's stem, prefixed by as many parent folders as tell it apart from other tars
    (``a/00000`` and ``b/00000``); the same file listed twice keeps one name."""
    files = [Path(p).resolve() for p in paths]
    parts = [f.parent.parts + (f.name.split(".")[0],) for f in files]
    depth = [1] * len(files)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        owners: dict[str, set[Path]] = {}
        for f, name in zip(files, names):
            owners.setdefault(name, set()).add(f)
        clashing = [i for i, name in enumerate(names) if len(owners[name]) > 1]
        if not clashing:
            return names
        for i in clashing:
            depth[i] += 1


def iter_webdataset(src: WebDatasetSource, start: int = 0) -> Iterator[RawSample]:
    index = 0  # sample index over all shards
    seen: dict[str, list[str]] = {}  # full key -> where each of its samples came from
    for p, stem in zip(src.paths, _shard_names(src.paths)):
        path = Path(p)
        with _open_tar(path) as tar:
            key, members, exts, reason = None, {}, set(), None

            def sample() -> RawSample | None:
                """The sample just read (None before ``start``); every key is remembered."""
                where = seen.setdefault(f"{stem}/{key}", [])
                where.append(f"{path}:{key}")
                if index < start:
                    return None
                return _tar_sample(stem, path, key, members, reason, src.group_key,
                                   first=where[0] if len(where) > 1 else None, copy=len(where))

            try:
                for member in tar:
                    if member.isdir():
                        continue
                    k, ext = _split_key(_readable(member.name))
                    if key is not None and k != key:
                        if done := sample():
                            yield done
                        index, members, exts, reason = index + 1, {}, set(), None
                    key = k
                    # in a stream a member's data is readable only until the next member
                    if unsafe_member_name(member.name):
                        reason = "unsafe tar member path"
                    elif not member.isfile():
                        reason = reason or "unsafe tar member type"
                    elif ext in exts:               # a second .txt would replace the first
                        reason = reason or "duplicate tar member"
                    elif member.size > src.max_bytes:
                        reason = reason or "too large"
                    elif index >= start and reason is None:
                        members[ext] = tar.extractfile(member).read()
                    exts.add(ext)
            except tarfile.ReadError as err:
                raise ValueError(f"{path}: corrupt tar after sample {key!r} ({err})") from None
            if key is not None:
                if done := sample():
                    yield done
                index += 1


def iter_folder(src: FolderSource, start: int = 0) -> Iterator[RawSample]:
    root = Path(src.path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found")
    name = root.resolve().name
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    images = [p for p in files if p.suffix.lower() in FOLDER_IMAGE_EXTS]
    stems_with_image = {p.with_suffix("") for p in images}
    orphans = [p for p in files if p.suffix == ".txt" and p.with_suffix("") not in stems_with_image]
    rows = sorted(images + orphans, key=lambda p: p.relative_to(root).as_posix())
    inside = root.resolve()
    for path in rows[start:]:
        key = f"folder/{name}/{_readable(path.relative_to(root).as_posix())}"
        txt = path.with_suffix(".txt")
        if any(f.exists() and not f.resolve().is_relative_to(inside) for f in (path, txt)):
            reason = "link outside folder"
        elif path.suffix == ".txt":
            reason = "missing image"
        elif not txt.is_file():
            reason = "missing caption"
        elif max(path.stat().st_size, txt.stat().st_size) > src.max_bytes:
            reason = "too large"
        else:
            reason = None
        fields, sidecar = {}, path.with_suffix(".json")
        if reason is None and sidecar.is_file():
            if not sidecar.resolve().is_relative_to(inside):
                reason = "link outside folder"
            elif sidecar.stat().st_size > src.max_bytes:
                reason = "too large"
            else:
                meta, reason = _json_object(sidecar.read_bytes())
                if reason is None:
                    fields, reason = _json_fields(meta, src.group_key)
        yield RawSample(key=key, source="folder", source_ref=_readable(str(path)),
                        image=path.read_bytes() if reason is None else None,
                        caption=txt.read_bytes() if reason is None else None,
                        sample_key=_readable(path.relative_to(root).with_suffix("").as_posix()),
                        reject_reason=reason, **(fields if reason is None else {}))
