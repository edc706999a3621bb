"""The docs stand on their own: the README is a short manual, and every file, module and
section the docs and the code's comments refer to exists in the repository."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from flame_pipeline.pipeline import STAGES
from import_graph import modules
from profiles import REPO

DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
CODE = [f for d in ("flame_pipeline", "assets", "tests", "bench", "experiments", "scripts")
        for f in sorted((REPO / d).rglob("*")) if f.suffix in (".py", ".sh")] \
    + [REPO / "params.yaml", REPO / "dvc.yaml"]
TOP = ("flame_pipeline", "assets", "tests", "bench", "experiments", "docs", "scripts")
PATH = re.compile(r"`((?:%s)/[\w./-]*|[\w-]+\.(?:yaml|toml|txt|sh))`" % "|".join(TOP))
DOTTED = re.compile(r"`(flame_pipeline(?:\.\w+)+)`")
DOC_NAME = re.compile(r"[\w./-]*[A-Z]+\.md(?:#[\w-]+)?")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    return {slug(m[1]) for m in re.finditer(r"^#+ (.*)$", md.read_text(), re.M)}


def _defined(module: str, name: str) -> bool:
    tree = ast.parse(modules()[module].read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return name in names


def resolves(dotted: str) -> bool:
    """``package.module[.name]``: the module exists and defines the name."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        if module in modules():
            return i == len(parts) or _defined(module, parts[i])
    return False


def test_readme_is_a_manual_under_8_kb():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) < 8192
    for section in ("## The two commands", "## Profiles", "## The `flame` command",
                    "## Orchestration", "## Layout", "## Extending it"):
        assert section in text
    graph = text.split("```")[1]          # the stage graph at the top
    assert all(name in graph for name in STAGES)
    for doc in ("METHOD", "RESULTS", "EXPERIMENTS", "DESIGN"):
        assert f"(docs/{doc}.md)" in text


@pytest.mark.parametrize("md", DOCS, ids=lambda p: p.name)
def test_every_reference_in_the_docs_resolves(md):
    text = md.read_text()
    missing = [link for link in re.findall(r"\]\(([^)#\s]+)", text)
               if not link.startswith("http") and not (md.parent / link).exists()]
    missing += [p for p in PATH.findall(text) if not (REPO / p.rstrip("/")).exists()]
    missing += [d for d in DOTTED.findall(text) if not resolves(d)]
    missing += [d for d in DOC_NAME.findall(text) if "/" in d and not _doc_ok(d)]
    assert not missing, f"{md.name} refers to what is not in the repository: {missing}"


def _doc_ok(ref: str) -> bool:
    path, _, anchor = ref.partition("#")
    target = REPO / path
    return target.is_file() and (not anchor or anchor in anchors(target))


def test_code_cites_docs_by_repository_path_and_existing_section():
    wrong = [f"{f.relative_to(REPO)}: {ref}" for f in CODE if f.is_file()
             for ref in DOC_NAME.findall(f.read_text()) if not _doc_ok(ref)]
    assert not wrong, "\n".join(wrong)
