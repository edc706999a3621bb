"""The stage spec: a consistent graph, and the CLI and the docs derived from it."""
import re

import pytest

from flame_pipeline import cli
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import STAGES, location, stage_table, upstream
from profiles import REPO


def test_every_stage_reads_only_what_earlier_stages_write():
    written: list = []
    for stage in STAGES.values():
        for read in stage.reads:
            assert any(location(read) == w or w in location(read).parents for w in written), \
                f"{stage.name} reads {read}, which no earlier stage writes"
        for write in stage.writes:
            assert not any(location(write) == w or w in location(write).parents
                           or location(write) in w.parents for w in written), \
                f"{stage.name} writes {write}, inside another stage's output"
        written += [location(w) for w in stage.writes]
        stage.load()   # the function exists


def test_upstream_follows_the_files():
    assert upstream("download") == []
    assert upstream("train") == ["download", "curate", "embed"]
    assert upstream("train_baseline") == ["download", "curate"]
    assert upstream("evaluate") == ["download", "curate", "embed", "train", "train_baseline"]
    assert upstream("report") == ["evaluate"]
    assert location("flame_model", REPO / "data/x") == Paths(REPO / "data/x").flame_model


def test_cli_has_one_subcommand_per_stage_with_its_description(capsys):
    parser = cli._parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for stage in STAGES.values():
        assert commands[stage.command].description == stage.description
    assert cli.main(["--profile", "tiny", "stages"]) == 0
    assert capsys.readouterr().out == stage_table()


def test_design_doc_holds_the_stage_table_verbatim():
    text = (REPO / "docs/DESIGN.md").read_text()
    block = re.search(r"<!-- stage table: `flame stages` -->\n(.*?)<!-- end -->", text, re.S)
    assert block, "docs/DESIGN.md lost its stage table markers"
    assert block[1] == stage_table(), "run `flame stages` and paste its table into docs/DESIGN.md"


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_table_row_names_its_function_and_files(name):
    row = next(r for r in stage_table().splitlines() if r.startswith(f"| {name} |"))
    assert f"`{STAGES[name].function.replace(':', '.')}`" in row
    assert all(f"`{location(w).as_posix()}`" in row for w in STAGES[name].writes)
