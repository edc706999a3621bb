"""Fixtures every test module can ask for by name (pytest finds them here).

Plain helpers that build inputs live in named modules beside this one: ``profiles.profile_at``
(a profile whose data_dir is a temporary directory), ``train_data`` (a training data_dir),
``download_support`` (images and an HTTP server), ``eval_oracle``, ``dvc_tool``, and
``import_graph`` (the project's imports, for the layer, DVC and docs tests).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

from flame_pipeline.config import Profile
from profiles import profile_at
from train_data import write_training_data


@pytest.fixture(scope="session", autouse=True)
def dagster_home(tmp_path_factory) -> Iterator[Path]:
    """A Dagster instance of the test session's own: the ``flame`` CLI reports its stage runs
    to ``$DAGSTER_HOME`` (assets/history.py), never to the project's ``.dagster_home/`` here."""
    home = tmp_path_factory.mktemp("dagster_home")
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("DAGSTER_HOME")
    else:
        os.environ["DAGSTER_HOME"] = before


@pytest.fixture
def tiny_cfg(tmp_path) -> Profile:
    """The tiny profile with its data_dir at ``tmp_path/data`` (the embed cache beside it)."""
    return profile_at(tmp_path / "data")


@pytest.fixture
def make_data():
    """``make_data(root, *, overrides=None, profile="tiny", **shape)``: write a training data_dir
    at ``root`` (``train_data.write_training_data``) and return the profile pointing at it."""
    def make(root: Path, *, overrides: dict | None = None, profile: str = "tiny", **shape) -> Profile:
        cfg = profile_at(root, overrides, profile)
        write_training_data(cfg, **shape)
        return cfg
    return make


@pytest.fixture
def one_thread():
    """torch on one thread for a test (bitwise-comparable with the 1-thread child runs),
    restored afterwards so later tests run with the process default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
