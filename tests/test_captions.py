"""Caption normalisation rules (docs/METHOD.md#captions), for one string and for the Polars expression."""
import random

import polars as pl
import pytest

from flame_pipeline.captions import normalise_caption, normalise_expr


@pytest.mark.parametrize("raw, expected", [
    ("  a red cube  ", "a red cube."),                         # strip + final '.'
    ("a red cube.", "a red cube."),                            # already punctuated
    ("a red cube!", "a red cube!"),
    ("is it a red cube?", "is it a red cube."),                # final '?' -> '.'
    ("why? a red cube", "why? a red cube."),                   # only the final '?'
    ('a "red" cube', "a 'red' cube."),                         # '"' -> "'"
    ('a cube "?"', "a cube '?'."),                             # quote replaced, then punctuated
    ("a\tred\n\n cube\u3000on\xa0grass", "a red cube on grass."),  # whitespace collapse
    ("赤い立方体", "赤い立方体."),
    ("赤い立方体？", "赤い立方体。"),                           # full-width '?' -> full stop
    ("wait…", "wait…"),
    ("", ""),
    (" \n\t ", ""),                                             # empty stays empty
])
def test_rules(raw, expected):
    assert normalise_caption(raw) == expected


def test_idempotent():
    for raw in ["a cube?", ' "x" ', "a  b", "ok."]:
        once = normalise_caption(raw)
        assert normalise_caption(once) == once


def test_rejects_non_string():
    with pytest.raises(TypeError, match="caption must be str"):
        normalise_caption(b"bytes")


def test_polars_expression_agrees_with_function():
    rng = random.Random(0)
    alphabet = list("ab Z.!?\"'…。？！") + ["\t", "\n", "\x0b", "\x1c", "\xa0", "\u3000", "\u200b", "é"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    got = pl.DataFrame({"t": texts + [None]}).select(normalise_expr(pl.col("t")))["t"].to_list()
    assert got[:-1] == [normalise_caption(t) for t in texts]
    assert got[-1] is None
