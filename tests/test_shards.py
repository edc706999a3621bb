import os

import numpy as np
import pytest

from flame_pipeline.shards import iter_shards, open_shards, write_shards


def test_rows_round_trip_across_many_shards(tmp_path):
    rows = [{"key": f"k{i}", "x": np.full(3, i, np.float16)} for i in range(40)]
    write_shards(tmp_path / "s", {"key": "str", "x": "ndarray:float16"}, rows, size_limit=200)
    ds = open_shards(tmp_path / "s")
    assert len(ds.readers) > 5 and len(ds) == 40
    for i in (0, 17, 39):
        got = ds.get_item(i)
        assert got["key"] == f"k{i}" and got["x"].tolist() == [i] * 3
    assert [r["key"] for r in iter_shards(tmp_path / "s")] == [r["key"] for r in rows]
    with pytest.raises(IndexError):
        ds.get_item(40)


def test_reading_holds_no_file_descriptors(tmp_path):
    write_shards(tmp_path / "s", {"key": "str"}, ({"key": str(i)} for i in range(10)))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(30):
        assert len(list(iter_shards(tmp_path / "s"))) == 10
    assert len(os.listdir("/proc/self/fd")) <= before + 2
