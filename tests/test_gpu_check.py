"""bench/gpu_check.sh: its FLOP count, and its smoke mode run whole on the CPU so that the GPU
check cannot rot between the sessions that have a GPU."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from flame_pipeline.config import VisionConfig
from flame_pipeline.vision.towers import FlameModel
from profiles import REPO

sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402

FIGURES = ["peak_tflops", "facet_max_abs_diff", "facet_min_cosine", "precompute_tokens_per_s",
           "precompute_mfu", "vit_train_images_per_s", "vit_train_mfu", "all_reduce_ms"]


@pytest.mark.parametrize("vision, d_llm", [
    (gpu_check.vit_b16(), 896),
    (VisionConfig(image_size=32, patch_size=8, hidden_size=32, layers=2, heads=2, mlp_size=64,
                  projector_min_width=128), 64)])
def test_tower_flops_from_the_config_are_what_torch_counts(vision, d_llm):
    with torch.device("meta"):
        model = FlameModel(vision, d_llm)
        pixels = torch.empty(2, 3, vision.image_size, vision.image_size)
    with FlopCounterMode(display=False) as counter:
        model(pixels)
    assert counter.get_total_flops() == 2 * gpu_check.tower_forward_flops(vision, d_llm)
    if vision.hidden_size == 768:   # ViT-B/16's 17.6 G multiply-adds (often quoted as GFLOPs)
        assert round(gpu_check.tower_forward_flops(vision, d_llm) / 1e9, 1) == 35.7  # + projector


@pytest.mark.slow
def test_smoke_mode_prints_every_figure_and_passes():
    env = dict(os.environ, FLAME_PEAK_TFLOPS="1.5")
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--smoke"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    found = {m[1]: (float(m[2]), m[3]) for m in
             re.finditer(r"^(\w+) = (\S+) (.+)$", proc.stdout, re.M)}
    assert sorted(found) == sorted(FIGURES)
    assert all(math.isfinite(value) and value >= 0 for value, _ in found.values())
    assert found["peak_tflops"][0] == 1.5
    assert found["facet_max_abs_diff"][1].endswith("pass)")
    assert found["all_reduce_ms"][1].endswith("sum correct)")
