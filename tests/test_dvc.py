"""Fast DVC tests: the project's DVC files follow the stage spec, and the md5s Dagster records
are DVC's own."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from assets.metadata import dvc_md5
from dvc_tool import REPO, run_dvc
from flame_pipeline.pipeline import STAGES, location
from import_graph import closure, modules


def test_dvc_md5_equals_what_dvc_records(tmp_path):
    run_dvc("init", "--no-scm", "-q", cwd=tmp_path)
    d = tmp_path / "out"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(bytes(range(256)) * 3)
    (d / "sub" / "b.txt").write_text("line\r\nwith crlf\n")
    (d / "sub" / "c.json").write_text('{"x": 1}')
    (tmp_path / "single.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    run_dvc("add", "-q", "out", "single.parquet", cwd=tmp_path)
    for name, path in (("out", d), ("single.parquet", tmp_path / "single.parquet")):
        recorded = yaml.safe_load((tmp_path / f"{name}.dvc").read_text())["outs"][0]["md5"]
        assert dvc_md5(path) == recorded


def test_project_pipeline_has_every_stage_for_each_profile():
    listed = run_dvc("stage", "list", "--name-only", cwd=REPO).stdout.split()
    assert sorted(listed) == sorted(f"{s}@{p}" for s in STAGES for p in ("default", "scenes", "tiny"))


def test_dvc_config_analytics_off_and_local_remote():
    assert run_dvc("config", "--project", "core.analytics", cwd=REPO).stdout.strip() == "false"
    assert run_dvc("remote", "default", "--project", cwd=REPO).stdout.strip() == "local"
    url = run_dvc("config", "--project", "remote.local.url", cwd=REPO).stdout.strip()
    assert Path(url) == REPO / ".dvc" / "remote"  # dvc resolves it for this checkout...
    assert "url = remote" in (REPO / ".dvc" / "config").read_text()  # ...from a relative path
    assert "/remote" in (REPO / ".dvc" / ".gitignore").read_text().split()


def test_code_deps_exist_and_outputs_stay_under_the_profile_dir():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in doc["stages"].items():
        body = stage["do"]
        for dep in body["deps"]:
            if not dep.startswith("data/"):
                assert (REPO / dep).exists(), f"{name}: dep {dep} does not exist"
        outs = body.get("outs", []) + body.get("metrics", []) + body.get("plots", [])
        assert outs and all(o.startswith("data/${item}/") for o in outs), name
        assert body["params"] == ["common", "profiles.${item}"]
    # one DVC stage per library stage, in the chain's order
    assert list(doc["stages"]) == list(STAGES)


def test_dvc_metrics_and_plots_files_are_declared():
    shown = json.loads(run_dvc("metrics", "show", "--json", cwd=REPO).stdout or "{}")
    assert isinstance(shown, dict)  # parses even before any run (no metrics yet)
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    plots = {k for entry in doc["plots"] for k in entry}
    assert plots == {"loss_default", "loss_scenes", "loss_tiny"}


def _files(dep: str) -> set[Path]:
    """The Python files a code dep names (a file, or every file under a directory)."""
    path = REPO / dep
    return set(path.rglob("*.py")) if path.is_dir() else {path}


def test_each_stage_mirrors_the_spec_deps_imports_and_outs():
    """data deps = what the spec reads, outs = what it writes, code deps = exactly the files
    the stage function's module imports, directly or not, function-level imports included
    (an empty package marker changes nothing and is not needed); other file deps (the pinned
    npm data packages) must exist."""
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in STAGES.items():
        body = doc["stages"][name]["do"]
        assert body["cmd"] == f"flame {stage.command} --profile ${{item}}"
        data = [d for d in body["deps"] if d.startswith("data/")]
        assert data == [f"data/${{item}}/{location(r).as_posix()}" for r in stage.reads], name
        outs = body.get("outs", []) + body.get("metrics", []) + body.get("plots", [])
        assert sorted(outs) == sorted(f"data/${{item}}/{location(w).as_posix()}"
                                      for w in stage.writes), name
        inputs = [d for d in body["deps"] if not d.startswith("data/") and not (REPO / d).is_dir()
                  and not d.endswith(".py")]   # pinned input lists (requirements-npm.txt)
        assert all((REPO / d).is_file() for d in inputs), name
        code = set().union(*(_files(d) for d in body["deps"]
                             if not d.startswith("data/") and d not in inputs))
        imported = {modules()[m] for m in closure(stage.function.split(":")[0])}
        missing = {f for f in imported - code if f.read_text().strip()}
        assert not missing, f"{name}: dvc.yaml misses {sorted(str(f) for f in missing)}"
        assert not code - imported, f"{name}: dvc.yaml lists {sorted(str(f) for f in code - imported)}"
