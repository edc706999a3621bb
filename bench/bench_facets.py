"""Facet-decoupled attention and the embed cache, measured on a real packaged LLM.

    .venv/bin/python bench/bench_facets.py [--llm smollm2-135m] [--captions 32] [--dtype fp32]

Prints, each against a baseline measured in the same run:
1. one pass for all K facets vs K separate passes (P + Fk each) over the same captions:
   the measured speedup next to the ideal token ratio sum_k(|P|+|Fk|) / (|P| + sum_k |Fk|),
   and speedup / ideal (goal >= 0.8), in wall seconds and in process CPU seconds (steadier
   on a shared machine), the two runs alternated; they agree to the printed minimum cosine;
2. precompute throughput (``TextEncoder.ensure`` over the single, short and long sets) in
   real tokens/s, and as a fraction of this machine's matmul peak in the same dtype
   (FLOPs ~ 2 x non-embedding parameters x tokens; peak = a 2048^3 matmul timed here);
3. the content cache: the second run's time over the first's (the first includes loading
   the model, which a full cache hit never does).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flame_pipeline.config import load_profile  # noqa: E402
from flame_pipeline.text.facets import facet_embeddings  # noqa: E402
from flame_pipeline.text.llm import device_and_dtype, load_llm  # noqa: E402
from flame_pipeline.text.encoder import TextEncoder  # noqa: E402
from flame_pipeline.text.prompts import PromptBuilder, PromptTokens, prepare_caption  # noqa: E402

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
SHAPES = ["cube", "ball", "triangle", "star", "ring", "square", "cone", "heart"]
PLACES = ["to the left of", "to the right of", "above", "below", "next to"]


def captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)

    def thing() -> str:
        return f"a {rng.choice(['small', 'big', 'tiny'])} {rng.choice(COLOURS)} {rng.choice(SHAPES)}"
    return [" ".join(f"{thing()} {rng.choice(PLACES)} {thing()}." for _ in range(rng.randint(1, 3)))
            for _ in range(n)]


def clock(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def interleaved(a, b, repeats: int) -> tuple[float, float, float, float]:
    """Best wall and CPU seconds of ``a`` and ``b``, run alternately so that a load from
    other processes that comes and goes falls on both alike."""
    runs = {a: [], b: []}
    for _ in range(repeats):
        for fn in (a, b):
            runs[fn].append(clock(fn))
    best = {fn: (min(w for w, _ in r), min(c for _, c in r)) for fn, r in runs.items()}
    return best[a][0], best[b][0], best[a][1], best[b][1]


def alone(rows: list[PromptTokens]) -> list[PromptTokens]:
    """Each facet of ``rows`` as a prompt of its own, P + Fk, in row and facet order."""
    return [PromptTokens(r.prefix, [f], r.truncated) for r in rows for f in r.facets]


def embed_rows(model, rows: list[PromptTokens], layer, size: int) -> torch.Tensor:
    """[sum of K, d]: every facet vector of ``rows`` in row and facet order, computed in passes
    of ``size`` rows sorted by length (as the stage does: less padding)."""
    order = sorted(range(len(rows)), key=lambda i: rows[i].n_tokens)
    out: list = [None] * len(rows)
    for start in range(0, len(order), size):
        part = order[start:start + size]
        for i, emb in zip(part, facet_embeddings(model, [rows[i] for i in part], layer)):
            out[i] = emb
    return torch.cat(out)


def one_vs_separate(model, rows: list[PromptTokens], layer: int, size: int,
                    repeats: int) -> dict:
    singles = alone(rows)
    run_one = lambda: embed_rows(model, rows, layer, size)      # noqa: E731
    run_sep = lambda: embed_rows(model, singles, layer, size)   # noqa: E731
    run_one(), run_sep()                                         # warm-up
    t_one, t_sep, c_one, c_sep = interleaved(run_one, run_sep, repeats)
    min_cos = torch.nn.functional.cosine_similarity(run_one(), run_sep(), dim=-1).min().item()
    ideal = sum(s.n_tokens for s in singles) / sum(r.n_tokens for r in rows)
    return {"t_one": t_one, "t_sep": t_sep, "speedup": t_sep / t_one, "ideal": ideal,
            "cpu_speedup": c_sep / c_one, "min_cos": min_cos}


def non_embedding_params(model) -> int:
    """The LLM's parameters less its input embeddings: each one is a multiply-add per token."""
    embedding = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embedding


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048,
                repeats: int = 3) -> tuple[float, float]:
    """Best FLOP/s of an n^3 matmul per wall second and per CPU second."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b

    def run():
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
    runs = [clock(run) for _ in range(repeats)]
    return 2 * n ** 3 / min(w for w, _ in runs), 2 * n ** 3 / min(c for _, c in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--captions", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=2, help="alternating timed runs, best kept")
    args = ap.parse_args()
    params = ROOT / "params.yaml"
    cfg = load_profile("default", params, overrides={
        "embed.llm": args.llm, "embed.dtype": args.dtype, "embed.batch_size": args.batch,
        "embed.postprocess": "none"}).embed
    device, dtype = device_and_dtype(cfg)
    print(f"bench_facets: {args.llm}, {args.captions} captions, {dtype}, {device}, "
          f"{torch.get_num_threads()} threads")
    model, tok = load_llm(cfg)
    builder = PromptBuilder(tok, cfg.prompt_sets, cfg.max_tokens)
    texts = [prepare_caption(c) for c in captions(args.captions)]

    for ps in ("short", "long"):
        rows = [builder.build(t, ps) for t in texts]
        r = one_vs_separate(model, rows, cfg.layer, args.batch, args.repeats)
        print(f"[{ps}, K={len(rows[0].facets)}] one pass {r['t_one']:.2f} s vs "
              f"{len(rows[0].facets)} separate passes {r['t_sep']:.2f} s: speedup "
              f"{r['speedup']:.2f}x, ideal token ratio {r['ideal']:.2f}x, speedup/ideal "
              f"{r['speedup'] / r['ideal']:.2f}; in CPU seconds {r['cpu_speedup']:.2f}x, "
              f"/ideal {r['cpu_speedup'] / r['ideal']:.2f} (min cosine one-pass vs separate "
              f"{r['min_cos']:.6f})")

    units = [(ps, t) for t in texts for ps in ("single", "short", "long")]
    tokens = sum(builder.build(t, ps).n_tokens for ps, t in units)
    params_n = non_embedding_params(model)
    del model
    with tempfile.TemporaryDirectory() as cache:
        def first():
            enc = TextEncoder(cfg, cache)
            enc.load()                      # the model load is not part of the rate
            start.update(wall=time.perf_counter(), cpu=time.process_time())
            enc.ensure(units)
            assert enc.computed == len(units)

        def second():
            enc = TextEncoder(cfg, cache)
            enc.raw(units)
            assert enc.computed == 0
        peaks = [matmul_peak(dtype, device)]
        start: dict = {}
        t_first = clock(first)[0]
        compute_wall = time.perf_counter() - start["wall"]
        compute_cpu = time.process_time() - start["cpu"]
        peaks.append(matmul_peak(dtype, device))
        t_second = clock(second)[0]
    peak_wall, peak_cpu = max(p[0] for p in peaks), max(p[1] for p in peaks)
    flops = 2 * params_n * tokens
    print(f"[precompute] {len(units)} texts, {tokens} tokens in {compute_wall:.2f} s wall / "
          f"{compute_cpu:.2f} CPU s (model load apart): {tokens / compute_wall:.0f} tokens/s; "
          f"{flops / compute_wall / 1e9:.1f} GFLOP/s (2 x {params_n / 1e6:.0f}M non-embedding "
          f"params x tokens) vs matmul peak {peak_wall / 1e9:.1f} GFLOP/s in {dtype}: "
          f"MFU {flops / compute_wall / peak_wall:.2f} per wall second, "
          f"{flops / compute_cpu / peak_cpu:.2f} per CPU second")
    print(f"[cache] first run {t_first:.2f} s (with model load), second run {t_second:.3f} s: "
          f"second/first {t_second / t_first:.4f}")


if __name__ == "__main__":
    main()
