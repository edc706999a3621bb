"""The benchmark registry: every kind ``eval.benchmarks`` can list, and what runs it.

One list in params names them all (docs/METHOD.md#evaluation): the benchmarks of the curated
held-out split by their bare names (``curated.py``), the compositional probe
(``compositional.py``) and benchmarks read from files, each format a module with
``detect(path)``, ``load(path, spec)`` and ``score(cfg, spec, model, loaded)``: ``manifest``,
``class_folders``, ``karpathy``, ``long_captions``, ``xm3600``. A file benchmark's metrics are
named ``manifest/<name>/<what the format scores>``, whichever door ran it: the evaluate stage
(so the chain, Dagster and ``dvc repro``) or ``flame benchmark`` (``user_benchmark.py``).
``run_suite`` runs a profile's list on one model, the same code for FLAME and CLIP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

from flame_pipeline.config import DATA_FORMATS, Benchmark, DataBenchmark, Profile
from flame_pipeline.eval import (class_folders, compositional, curated, karpathy, long_captions,
                                 manifest, xm3600)
from flame_pipeline.eval.benchmark_files import Loaded
from flame_pipeline.eval.curated import Curated, Results
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.progress import progress

# file formats, in the order ``detect_format`` tries them
FORMATS: dict[str, ModuleType] = {"karpathy": karpathy, "long_captions": long_captions,
                                  "xm3600": xm3600, "manifest": manifest,
                                  "class_folders": class_folders}
assert set(FORMATS) == set(DATA_FORMATS)
MIN_GALLERY = 10   # fewer images in a retrieval gallery: its recall gets a warning


def detect_format(path: Path) -> str:
    """The format of the benchmark at ``path``; an error naming the formats when none fits."""
    if not path.exists():
        raise FileNotFoundError(f"benchmark not found: {path}")
    for name, module in FORMATS.items():
        if module.detect(path):
            return name
    raise ValueError(f"{path}: cannot tell its benchmark format; give one of {sorted(FORMATS)}")


@dataclass
class Suite:
    """What the benchmarks of one evaluation share between models: the settings, the curated
    split (None where no pipeline data is read: ``flame benchmark``), the file benchmarks and
    probe images, each read or made once."""
    cfg: Profile
    curated: Curated | None = None
    loaded: dict[str, Loaded] = field(default_factory=dict)        # file benchmarks by name
    probe: list[compositional.ProbeItem] | None = None

    def data_path(self, spec: DataBenchmark) -> Path:
        return Path(self.cfg.eval.benchmark_dir) / spec.path

    def load(self, spec: DataBenchmark, path: Path | None = None) -> Loaded:
        if spec.title not in self.loaded:
            self.loaded[spec.title] = FORMATS[spec.kind].load(path or self.data_path(spec), spec)
        return self.loaded[spec.title]


def data_results(suite: Suite, spec: DataBenchmark, model: EvalModel) -> Results:
    loaded = suite.load(spec)
    out = FORMATS[spec.kind].score(suite.cfg, spec, model, loaded)
    return {f"manifest/{spec.title}/{name}": metrics for name, metrics in out.items()}


def _compositional(suite: Suite, spec, model: EvalModel) -> Results:
    if suite.probe is None:
        suite.probe = compositional.items_of(suite.cfg, spec)
    return compositional.score(suite.cfg, spec, model, suite.probe)


def _curated(run: Callable[[Profile, Curated, EvalModel], Results]):
    def on_curated(suite: Suite, spec, model: EvalModel) -> Results:
        if suite.curated is None:
            raise ValueError(f"benchmark {spec.kind!r} runs on the pipeline's curated split "
                             "(the evaluate stage), not on a file")
        return run(suite.cfg, suite.curated, model)
    return on_curated


KINDS: dict[str, Callable[[Suite, Benchmark, EvalModel], Results]] = {
    "zeroshot": _curated(curated.zeroshot),
    "retrieval": _curated(curated.retrieval),
    "long_retrieval": _curated(curated.long_retrieval),
    "multilingual": _curated(curated.multilingual),
    "linear_probe": _curated(curated.linear_probe),
    "interpretability": lambda suite, spec, model: {},   # a figure: evaluate.interpretability
    "compositional": _compositional,
    **{name: data_results for name in FORMATS},
}


def run_suite(suite: Suite, model: EvalModel, benchmarks: list[Benchmark] | None = None) -> Results:
    """The benchmarks (default: the profile's list) on one model, with a progress line per
    benchmark done."""
    out: Results = {}
    with progress(None, f"evaluate {model.name}", "benchmark") as bar:
        for spec in suite.cfg.eval.benchmarks if benchmarks is None else benchmarks:
            for name, metrics in KINDS[spec.kind](suite, spec, model).items():
                out[name] = metrics
                bar.set_postfix_str(name, refresh=False)
                bar.update(1)
    return out


def warnings(results: Results) -> list[str]:
    """A line for each retrieval gallery too small for its recall to mean much."""
    out = []
    for name, metrics in results.items():
        n = int(metrics.get("n_images", MIN_GALLERY))
        if "chance_R@1" in metrics and n < MIN_GALLERY:
            out.append(f"{name}: a gallery of {n} image{'s' * (n > 1)} (under {MIN_GALLERY}): "
                       f"recall is not meaningful (R@1 by chance: {metrics['chance_R@1']:.0f}%)")
    return out
