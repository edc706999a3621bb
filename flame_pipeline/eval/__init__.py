"""Benchmark evaluation (docs/METHOD.md#evaluation), the same code for the FLAME model and the
CLIP baseline.

- ``metrics``: duplicate-aware recall@K and top-k accuracy from a similarity matrix and a relation
- ``zeroshot``, ``retrieval``, ``probe``, ``interpret``: the benchmarks on embeddings
- ``encoders``: both trained models behind one interface (``load_eval_model``)
- ``data``: curated test/train rows with image hashes and image bytes
- ``evaluate``: the stage (``evaluate(cfg) -> StageOutput``), ``eval/metrics.json`` and plots
- ``plots``: figures; ``report``: the report stage, Markdown generated from DuckDB
- ``user_benchmark``: a user's manifest (``evaluate_manifest``, ``flame benchmark PATH``)
"""
