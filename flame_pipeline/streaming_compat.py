"""The one place that imports mosaicml-streaming.

``import streaming`` imports ``streaming.vision``, which needs torchvision; this project
installs no torchvision (PyPI's wheels break beside CPU torch), and never uses those
vision datasets. An empty module stands in for ``streaming.vision`` before the import.
"""
from __future__ import annotations

import sys
import types

if "streaming.vision" not in sys.modules:
    sys.modules["streaming.vision"] = types.ModuleType("streaming.vision")

import streaming  # noqa: E402
from streaming import MDSWriter, StreamingDataset  # noqa: E402
from streaming.base.format import reader_from_json  # noqa: E402
from streaming.base.util import merge_index  # noqa: E402

__all__ = ["streaming", "MDSWriter", "StreamingDataset", "merge_index", "reader_from_json"]
