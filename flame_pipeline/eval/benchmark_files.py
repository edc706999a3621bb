"""A benchmark's files read safely: every row is scored or rejected with a reason.

Each format's loader (``manifest``, ``class_folders``, ``karpathy``, ``long_captions``,
``xm3600``) reads its files through ``Folder``, which refuses a path leading out of the
benchmark's folder (``..``, an absolute path, or a symlink pointing out), and records each row
it cannot use in ``Loaded.problems`` as (row number, reason, detail): ``outside_folder``,
``missing_image``, ``unreadable_image``, ``missing_text``, ``bad_language``,
``unreadable_row``, ... A bad row is never fatal; a benchmark left without a usable row is an
error counting the reasons. What a "row" is belongs to the format: a manifest line, a caption of
a Karpathy entry, an image of a class folder.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from flame_pipeline.vision.preprocess import decode

MAX_LISTED = 50   # problem rows listed by number (all are counted)


@dataclass
class Row:
    number: int                  # where the row is in its file (1-based), as problems name it
    image: bytes                 # the image file's bytes
    sha256: str
    text: str | None = None      # None: a class-folder image, which has a label instead
    language: str = "en"
    label: str | None = None
    entry: int | None = None     # the image entry the row belongs to, where a format counts them


@dataclass
class Loaded:
    path: Path
    kind: str
    rows: list[Row] = field(default_factory=list)
    problems: list[tuple[int, str, str]] = field(default_factory=list)
    n_rows: int = 0              # rows read: len(rows) + len(problems)
    excluded: int = 0            # rows of another split: not part of the benchmark
    classes: list[str] = field(default_factory=list)     # class_folders: the class names
    templates: list[str] = field(default_factory=list)   # class_folders: the zero-shot templates

    def reject(self, number: int, reason: str, detail: str) -> None:
        self.problems.append((number, reason, detail))

    def accounting(self) -> dict:
        """Rows read, used and rejected (counted by reason, the first ``MAX_LISTED`` listed)."""
        return {"path": str(self.path), "format": self.kind, "rows": self.n_rows,
                "used": len(self.rows), "excluded": self.excluded,
                "problems": dict(sorted(Counter(r for _, r, _ in self.problems).items())),
                "problem_rows": [{"row": n, "reason": r, "detail": d}
                                 for n, r, d in self.problems[:MAX_LISTED]]}

    def usable(self) -> "Loaded":
        """Itself, or an error naming the problems when no row is usable."""
        self.n_rows = len(self.rows) + len(self.problems)
        if not self.rows:
            counts = Counter(r for _, r, _ in self.problems)
            raise ValueError(f"{self.path}: no usable rows ({self.n_rows} read"
                             + "".join(f", {r}: {n}" for r, n in sorted(counts.items())) + ")")
        return self


class Folder:
    """The benchmark's folder: the only place its files may come from."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def inside(self, relative: str) -> Path | None:
        """The resolved path of ``relative`` (symlinks followed), or None when it leads out."""
        target = (self.root / relative).resolve()
        return target if target.is_relative_to(self.root) else None

    def read_image(self, relative) -> tuple[bytes, str] | tuple[None, tuple[str, str]]:
        """(bytes, sha256) of the image at ``relative``, or (None, (reason, detail))."""
        if not isinstance(relative, str) or not relative.strip():
            return None, ("missing_image", repr(relative))
        target = self.inside(relative)
        if target is None:
            return None, ("outside_folder", relative)
        if not target.is_file():
            return None, ("missing_image", relative)
        data = target.read_bytes()
        try:
            decode(data)
        except ValueError as err:
            return None, ("unreadable_image", f"{relative}: {err}")
        return data, hashlib.sha256(data).hexdigest()

    def image(self, loaded: Loaded, number: int, relative) -> tuple[bytes, str] | None:
        """(bytes, sha256) of the image at ``relative``, or None with the problem recorded."""
        data, sha = self.read_image(relative)
        if data is None:
            loaded.reject(number, *sha)
            return None
        return data, sha

    def text_file(self, relative: str) -> str:
        """A text file of the benchmark (class names, templates); outside or missing is an error."""
        target = self.inside(relative)
        if target is None or not target.is_file():
            raise FileNotFoundError(f"{self.root}: no file {relative!r} inside the benchmark's folder")
        return target.read_text(encoding="utf-8-sig")
