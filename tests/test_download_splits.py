"""splits.hash_split: a stable, order-free train/test assignment."""
from __future__ import annotations

from flame_pipeline.data.splits import hash_split


def test_hash_split_is_stable_and_close_to_the_fraction():
    ids = [f"url_list/cc3m/{i:08d}" for i in range(4000)]
    first = [hash_split(i, 0.25) for i in ids]
    assert first == [hash_split(i, 0.25) for i in ids]          # no RNG state, no order
    assert 0.22 < first.count("test") / len(ids) < 0.28
    assert set(first) == {"train", "test"}
    # a larger fraction only moves rows from train to test
    assert all(b == "test" for a, b in zip(first, (hash_split(i, 0.5) for i in ids)) if a == "test")


def test_zero_fraction_leaves_the_split_to_curation():
    assert hash_split("folder/pics/a.png", 0.0) is None
    assert hash_split("folder/pics/a.png", 1.0) == "test"
