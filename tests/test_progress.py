"""Progress of long stages: a bar on a terminal, plain lines elsewhere (pipes, CI, Dagster logs)."""
from __future__ import annotations

import io
import sys

import pytest
from tqdm import tqdm

from flame_pipeline import progress as progress_module
from flame_pipeline.paths import Paths
from flame_pipeline.progress import progress
from flame_pipeline.text.encoder import TextEncoder
from profiles import profile_at


class Clock:
    """tqdm's clock, moved by hand."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lines_every_interval_and_at_the_end_never_a_carriage_return(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("tqdm.std.time", clock)
    monkeypatch.setattr(progress_module, "LINE_EVERY_S", 10.0)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress(100, "embed m", "text") as bar:
        for _ in range(100):
            clock.t += 1.0                  # a text a second: a line every 10 texts
            bar.set_postfix_str("prompt set short, 50 tokens/s", refresh=False)
            bar.update(1)
    text = err.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "embed m: 0/100 text (0%) [00:00<?, ?text/s]"
    assert [line.split(" text ")[0] for line in lines] == [f"embed m: {n}/100" for n in range(0, 101, 10)]
    assert lines[5] == "embed m: 50/100 text (50%) [00:50<00:50,  1.00text/s, prompt set short, 50 tokens/s]"
    # unknown totals count up; a disabled bar (a torchrun rank > 0) says nothing
    err.seek(0)
    err.truncate()
    with progress(None, "evaluate flame", "benchmark") as bar:
        clock.t += 3.0
        bar.set_postfix_str("zeroshot/scenes/shape", refresh=False)
        bar.update(1)
    with progress(5, "train flame", "step", initial=2, enabled=False) as bar:
        bar.update(3)
    assert err.getvalue().splitlines() == [
        "evaluate flame: 0 benchmark [00:00, ?benchmark/s]",
        "evaluate flame: 1 benchmark [00:03,  3.00s/benchmark, zeroshot/scenes/shape]"]


def test_a_terminal_gets_tqdms_own_bar(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    bar = progress(3, "train clip", "step")
    assert type(bar) is tqdm
    bar.close()


def test_embedding_shows_texts_and_tokens_per_second(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "LINE_EVERY_S", 0.0)
    cfg = profile_at(tmp_path / "data", {"embed.batch_size": 2, "embed.postprocess": "none"})
    enc = TextEncoder(cfg.embed, Paths.of(cfg).embed_cache)
    enc.encode(["a red square", "a dog on grass", "two blue circles"], prompt_set="short")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("embed ")]
    assert [line.split(" text ")[0] for line in lines] == \
        ["embed tiny-random: 0/3", "embed tiny-random: 2/3", "embed tiny-random: 3/3"]
    assert lines[-1].endswith("tokens/s]") and "prompt set short" in lines[-1]
    enc.encode(["a red square"], prompt_set="short")                     # cached: no bar
    assert "embed " not in capsys.readouterr().err


@pytest.mark.parametrize("total", [3, None])
def test_format_has_no_bar_characters(total, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress(total, "x", "row") as bar:
        bar.update(3)
    assert not set(err.getvalue()) & set("█▏▎▍▌▋▊▉|")
