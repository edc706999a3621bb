"""Facet-decoupled attention and the embed cache, measured on a real packaged LLM.

    .venv/bin/python bench/bench_facets.py [--llm smollm2-135m] [--captions 32] [--dtype fp32]

Prints, each against a baseline measured in the same run:
1. one pass for all K facets vs K separate passes (P + Fk each) over the same captions:
   the measured speedup next to the ideal token ratio sum_k(|P|+|Fk|) / (|P| + sum_k |Fk|),
   and speedup / ideal (goal >= 0.8); the two agree to the printed minimum cosine;
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
from flame_pipeline.text.precompute import TextEncoder  # noqa: E402
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


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def batches(rows: list, size: int):
    rows = sorted(rows, key=lambda r: r.n_tokens)          # as the stage does: less padding
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def one_vs_separate(model, rows: list[PromptTokens], layer: int, size: int) -> dict:
    singles = [PromptTokens(r.prefix, [f], r.truncated) for r in rows for f in r.facets]
    one_b, sep_b = batches(rows, size), batches(singles, size)
    run_one = lambda: [facet_embeddings(model, b, layer) for b in one_b]  # noqa: E731
    run_sep = lambda: [facet_embeddings(model, b, layer) for b in sep_b]  # noqa: E731
    run_one(), run_sep()                                                  # warm-up
    t_one, t_sep = timed(run_one, 2), timed(run_sep, 2)
    one = {tuple(r.prefix): e for b in one_b for r, e in zip(b, facet_embeddings(model, b, layer))}
    sep = {(tuple(r.prefix), tuple(r.facets[0])): e[0]
           for b in sep_b for r, e in zip(b, facet_embeddings(model, b, layer))}
    min_cos = min(torch.nn.functional.cosine_similarity(
        one[tuple(r.prefix)][k], sep[(tuple(r.prefix), tuple(f))], dim=0).item()
        for r in rows for k, f in enumerate(r.facets))
    ideal = sum(s.n_tokens for s in singles) / sum(r.n_tokens for r in rows)
    return {"t_one": t_one, "t_sep": t_sep, "speedup": t_sep / t_one, "ideal": ideal,
            "min_cos": min_cos}


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b

    def run():
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
    return 2 * n ** 3 / timed(run, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--captions", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
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
        r = one_vs_separate(model, rows, cfg.layer, args.batch)
        print(f"[{ps}, K={len(rows[0].facets)}] one pass {r['t_one']:.2f} s vs "
              f"{len(rows[0].facets)} separate passes {r['t_sep']:.2f} s: speedup "
              f"{r['speedup']:.2f}x, ideal token ratio {r['ideal']:.2f}x, speedup/ideal "
              f"{r['speedup'] / r['ideal']:.2f} (min cosine one-pass vs separate "
              f"{r['min_cos']:.6f})")

    units = [(ps, t) for t in texts for ps in ("single", "short", "long")]
    tokens = sum(builder.build(t, ps).n_tokens for ps, t in units)
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" in n)
    params_n = sum(p.numel() for p in model.parameters()) - embedding
    peak = matmul_peak(dtype, device)
    del model
    with tempfile.TemporaryDirectory() as cache:
        def first():
            enc = TextEncoder(cfg, cache)
            enc.ensure(units)
            assert enc.computed == len(units)

        def second():
            enc = TextEncoder(cfg, cache)
            enc.raw(units)
            assert enc.computed == 0
        t_load = timed(lambda: load_llm(cfg))
        t_first, t_second = timed(first), timed(second)
    compute = t_first - t_load
    rate = tokens / compute
    achieved = 2 * params_n * rate
    print(f"[precompute] {len(units)} texts, {tokens} tokens in {compute:.2f} s (+ {t_load:.2f} s "
          f"model load): {rate:.0f} tokens/s = {achieved / 1e9:.1f} GFLOP/s "
          f"(2 x {params_n / 1e6:.0f}M non-embedding params); matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s in {dtype}: MFU {achieved / peak:.2f}")
    print(f"[cache] first run {t_first:.2f} s, second run {t_second:.3f} s: "
          f"second/first {t_second / t_first:.4f}")


if __name__ == "__main__":
    main()
