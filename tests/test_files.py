import os
import signal
import subprocess
import sys

import pytest

from flame_pipeline.files import atomic_path, sha256_tree, write_json


def test_atomic_path_replaces_file_and_dir(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert target.read_text() == '{\n  "a": 2\n}\n'
    d = tmp_path / "shards"
    for n in (1, 2):
        with atomic_path(d) as tmp:
            tmp.mkdir()
            (tmp / f"f{n}").write_text("x")
    assert sorted(p.name for p in d.iterdir()) == ["f2"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failure_inside_leaves_target_untouched(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_killed_writer_leaves_no_visible_file_and_its_temp_is_reaped(tmp_path):
    target = tmp_path / "out.txt"
    code = ("import sys, time; from flame_pipeline.files import atomic_path\n"
            "with atomic_path(sys.argv[1]) as t:\n"
            "    t.write_text('half'); print('ready', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    assert len(list(tmp_path.glob(".out.txt.*.tmp"))) == 1      # the dead writer's temp
    write_json(target, [1])                                      # the next writer reaps it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_tree_hash_depends_on_names_and_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    h1 = sha256_tree(tmp_path / "a")
    (tmp_path / "a" / "x").write_text("2")
    h2 = sha256_tree(tmp_path / "a")
    (tmp_path / "a" / "x").rename(tmp_path / "a" / "y")
    assert len({h1, h2, sha256_tree(tmp_path / "a")}) == 3
