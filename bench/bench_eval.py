"""Evaluation speed: a 5,000 x 5,000 retrieval, and text-query embedding through TextEncoder.

    .venv/bin/python bench/bench_eval.py [--n 5000] [--dim 576] [--texts 32] [--skip-text | --skip-retrieval]

1. Retrieval: R@1/5/10 both ways (``metrics.retrieval_recalls``: one matmul, vectorised
   duplicate-aware ranks) on ``n`` images x ``n`` texts, against a brute-force reference
   measured in the same run on the same embeddings: a per-query Python loop that scores the
   query with numpy and sorts the whole gallery. Both must give the same numbers.
2. Text queries: texts/s of ``TextEncoder.encode`` on fresh scene captions with an empty
   cache (the frozen LLM runs) and again (every text a cache hit), for the profile's LLM and
   each prompt set used at evaluation, against a plain transformers forward of the same
   captions in the single prompt, measured in the same run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flame_pipeline.eval.metrics import retrieval_recalls  # noqa: E402

KS = (1, 5, 10)


def brute_force(img: np.ndarray, txt: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    out = {}
    for name, q, g, rel in (("i2t", img, txt, relevant), ("t2i", txt, img, relevant.T)):
        ranks = []
        for i in range(len(q)):
            scores = g @ q[i]
            order = np.argsort(-scores, kind="stable")
            ranks.append(int(np.flatnonzero(rel[i][order])[0]))
        ranks = np.asarray(ranks)
        out.update({f"{name}_R@{k}": float(100.0 * np.mean(ranks < k)) for k in KS})
    return out


def bench_retrieval(n: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(n, dim)).astype(np.float32)
    txt = img + rng.normal(scale=7.0, size=(n, dim)).astype(np.float32)   # noisy pairs
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    relevant = np.eye(n, dtype=bool)
    retrieval_recalls(img[:64], txt[:64], relevant[:64, :64], KS)   # warm-up (torch start-up)

    t0 = time.perf_counter()
    fast = retrieval_recalls(img, txt, relevant, KS)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = brute_force(img, txt, relevant)
    t_slow = time.perf_counter() - t0
    same = all(abs(fast[k] - slow[k]) < 1e-9 for k in slow)
    print(f"retrieval {n} x {n} (d={dim}), R@1/5/10 both ways:")
    print(f"  metrics.retrieval_recalls: {t_fast:.3f} s")
    print(f"  brute-force per-query loop: {t_slow:.3f} s")
    print(f"  speed-up: {t_slow / t_fast:.1f}x; same numbers: {same} "
          f"(i2t R@1 {fast['i2t_R@1']:.2f}, t2i R@1 {fast['t2i_R@1']:.2f})")
    if not same:
        raise SystemExit("fast and brute-force recalls disagree")


def plain_forward(embed_cfg, texts: list[str]) -> float:
    """Seconds for a plain transformers forward of the single prompts (no facet code, no cache)."""
    import torch

    from flame_pipeline.text.llm import load_llm

    model, tokenizer = load_llm(embed_cfg)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    single = embed_cfg.prompt_sets["single"]
    prompts = [single.prefix.format(caption=t) + single.facets[0] for t in texts]
    bs = embed_cfg.batch_size
    with torch.inference_mode():
        model(**tokenizer(prompts[:1], return_tensors="pt"))   # warm-up, as the encoder gets
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(prompts), bs):
            model(**tokenizer(prompts[start:start + bs], return_tensors="pt", padding=True))
    return time.perf_counter() - t0


def bench_text(profile: str, n_texts: int) -> None:
    from flame_pipeline.config import ScenesSource, load_profile
    from flame_pipeline.data.scenes import generate_scenes
    from flame_pipeline.text.encoder import TextEncoder

    cfg = load_profile(profile, ROOT / "params.yaml")
    # the LLM work is the cost; post-processing (a subtraction) needs the embed stage's statistics
    cfg = cfg.model_copy(update={"embed": cfg.embed.model_copy(update={"postprocess": "none"})})
    scenes = list(generate_scenes(ScenesSource(n_train=0, n_test=n_texts, image_size=32,
                                               languages=["en"], hard_negatives=False), seed=7))
    sets = {"single": [s.caption for s in scenes], "short": [s.caption for s in scenes],
            "long": [s.long_caption for s in scenes]}
    t_plain = plain_forward(cfg.embed, sets["single"])
    with tempfile.TemporaryDirectory() as cache:
        encoder = TextEncoder(cfg.embed, Path(cache))
        encoder.encode(["warm-up."], "single")
        print(f"text queries through TextEncoder ({cfg.embed.llm}, {n_texts} scene captions):")
        print(f"  baseline: plain transformers forward of the single prompts: "
              f"{n_texts / t_plain:8.1f} texts/s")
        for prompt_set, texts in sets.items():
            t0 = time.perf_counter()
            cold = encoder.encode(texts, prompt_set)
            t_cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm = encoder.encode(texts, prompt_set)
            t_warm = time.perf_counter() - t0
            assert np.allclose(cold, warm, atol=1e-3)
            print(f"  {prompt_set:6s} ({len(cfg.embed.prompt_sets[prompt_set].facets)} facets): "
                  f"LLM {n_texts / t_cold:8.1f} texts/s ({t_plain / t_cold:.2f}x the baseline), "
                  f"cached {n_texts / t_warm:10.1f} texts/s ({t_cold / t_warm:.0f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=576)   # SmolLM2-135M hidden size
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--skip-retrieval", action="store_true")
    args = ap.parse_args()
    if not args.skip_retrieval:
        bench_retrieval(args.n, args.dim)
    if not args.skip_text:
        bench_text(args.profile, args.texts)


if __name__ == "__main__":
    main()
