"""The class-folder format (ImageNet style): a folder per class, the images inside it.

Class names: ``classnames.txt`` in the benchmark's folder (or the file the benchmark's
``classnames`` names), one line per class folder in sorted folder order, as CLIP_benchmark's
class-name lists follow the sorted folder ids; without it, each folder's name with ``_`` read
as a space. Templates: a set shipped in ``flame_pipeline/eval/templates/`` named by the
benchmark's ``templates`` (``imagenet``: OpenAI's 80 ImageNet templates, as CLIP_benchmark uses
them), or a file of the folder; without a setting ``templates.txt`` when the folder has one,
else ``eval.zeroshot_templates``. A template holds the class name as ``{}`` (or ``{c}``).

Every entry of a class folder is a row: one that is not an image, that does not decode or
that leads out of the folder is rejected with its reason. Scored: zero-shot top-1/top-5 as
``zeroshot``.
"""
from __future__ import annotations

from pathlib import Path

from flame_pipeline.config import ClassFoldersBenchmark, Profile
from flame_pipeline.eval.benchmark_files import Folder, Loaded, Row
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.prompt_sets import single_set
from flame_pipeline.eval.scoring import row_zeroshot

TEMPLATES = Path(__file__).parent / "templates"   # shipped template sets: <name>.txt
CLASSNAMES, TEMPLATE_FILE = "classnames.txt", "templates.txt"


def template_lines(text: str) -> list[str]:
    """Templates from a file's text: one a line, ``{c}`` read as ``{}``."""
    return [line.strip().replace("{c}", "{}") for line in text.splitlines() if line.strip()]


def class_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect(path: Path) -> bool:
    """A folder of class folders (not the long-caption layout of ``image/`` and ``caption/``)."""
    if not path.is_dir() or {"image", "caption"} <= {p.name for p in class_dirs(path)}:
        return False
    return any(f.is_file() for d in class_dirs(path) for f in d.iterdir())


def _templates(folder: Folder, choice: str | None) -> list[str]:
    """The benchmark's templates (module doc); [] for ``eval.zeroshot_templates``."""
    if choice is None:
        local = folder.inside(TEMPLATE_FILE)
        return template_lines(local.read_text()) if local is not None and local.is_file() else []
    if (TEMPLATES / f"{choice}.txt").is_file() and "/" not in choice:
        return template_lines((TEMPLATES / f"{choice}.txt").read_text())
    if not choice.endswith(".txt"):
        shipped = sorted(p.stem for p in TEMPLATES.glob("*.txt"))
        raise ValueError(f"templates {choice!r}: not a shipped set ({shipped}) nor a .txt file")
    return template_lines(folder.text_file(choice))


def load(path: Path, spec: ClassFoldersBenchmark) -> Loaded:
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: a class-folder benchmark is a folder of class folders")
    folder = Folder(path)
    dirs = class_dirs(path)
    names_file = spec.classnames or (CLASSNAMES if (path / CLASSNAMES).is_file() else None)
    names = ([n.strip() for n in folder.text_file(names_file).splitlines() if n.strip()]
             if names_file else [d.name.replace("_", " ") for d in dirs])
    if len(names) != len(dirs):
        raise ValueError(f"{path}: {names_file} has {len(names)} class names for {len(dirs)} class folders")
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"{path}: class names must be two or more and distinct: {names}")
    out = Loaded(path, "class_folders", classes=names, templates=_templates(folder, spec.templates))
    number = 0
    for d, name in zip(dirs, names):
        for entry in sorted(d.iterdir()):
            number += 1
            relative = entry.relative_to(path).as_posix()
            if entry.is_dir():
                out.reject(number, "not_an_image", f"{relative} is a folder")
            elif (image := folder.image(out, number, relative)) is not None:
                out.rows.append(Row(number, *image, label=name))
    return out.usable()


def score(cfg: Profile, spec: ClassFoldersBenchmark, model: EvalModel, loaded: Loaded) -> dict:
    return {"zeroshot": row_zeroshot(model, loaded.rows, loaded.classes,
                                     loaded.templates or cfg.eval.zeroshot_templates,
                                     single_set(spec.prompt_set))}
