"""Curation throughput (rows/s) on a synthetic manifest, against tokenizer-only throughput.

    .venv/bin/python bench/bench_curate.py [--rows 20000]

The baseline, measured in the same run on the same texts, is the LLM tokenizer alone
(batched, as curation calls it): the ratio says what the table work (normalisation,
boilerplate regexes, splits, exact and near dedupe, stats, writing) costs on top of it.
"""
from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flame_pipeline.config import load_profile  # noqa: E402
from flame_pipeline.data.curate import count_tokens, curate  # noqa: E402
from flame_pipeline.paths import Paths  # noqa: E402
from flame_pipeline.llm_files import load_tokenizer  # noqa: E402

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
SHAPES = ["cube", "ball", "triangle", "star", "ring", "square", "cone", "heart"]
PLACES = ["left of", "right of", "above", "below", "next to"]
BOILERPLATE = ["image", "Untitled", "IMG_{n}.jpg", "http://example.com/{n}.png", "stock photo"]


def _thing(rng: random.Random) -> str:
    return f"{rng.choice(['a', 'one', 'the'])} {rng.choice(['small', 'big', 'tiny'])} " \
           f"{rng.choice(COLOURS)} {rng.choice(SHAPES)}"


def synthetic_manifest(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` manifest rows: ~5% boilerplate, ~5% exact and ~3% near repeats, ~30% long captions."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        caption = f"{_thing(rng)} {rng.choice(PLACES)} {_thing(rng)}"
        image = i
        draw = rng.random()
        if draw < 0.05:
            caption = rng.choice(BOILERPLATE).format(n=i)
        elif draw < 0.10 and rows:
            caption, image = rows[-1]["caption"], rows[-1]["_image"]        # exact repeat
        elif draw < 0.13 and rows:
            caption, image = rows[-1]["caption"].upper() + "!", rows[-1]["_image"]  # near repeat
        long = None
        if rng.random() < 0.3:
            long = " ".join(f"There is {_thing(rng)} {rng.choice(PLACES)} {_thing(rng)}."
                            for _ in range(rng.randint(3, 12)))
        rows.append({"key": f"syn/{i:07d}", "source": "synthetic", "source_ref": str(i),
                     "split": rng.choice([None, None, "train", "test"]), "caption": caption,
                     "short_caption": None, "long_caption": long, "language": "en", "labels": "{}", "group": None,
                     "status": "kept", "reason": None, "n_bytes": 1000, "width": 64, "height": 64,
                     "sha256": hashlib.sha256(f"img{image}".encode()).hexdigest(), "_image": image})
    return pl.DataFrame(rows).drop("_image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for each figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_profile("default", ROOT / "params.yaml", {"data_dir": tmp})
        paths = Paths.of(cfg)
        paths.manifest.parent.mkdir(parents=True)
        synthetic_manifest(args.rows).write_parquet(paths.manifest)
        tokenizer = load_tokenizer(cfg.embed)  # loaded (and cached) before either clock starts

        t_curate = []
        for _ in range(args.repeat):
            shutil.rmtree(paths.curated, ignore_errors=True)  # a full run each time, no resume
            start = time.perf_counter()
            out = curate(cfg)
            t_curate.append(time.perf_counter() - start)

        # the baseline tokenises exactly the texts the stage tokenised: the curated ones
        kept = pl.read_parquet(paths.captions)
        texts = pl.concat([kept["caption"], kept["long_caption"]]).drop_nulls().unique().sort().to_list()
        t_tok = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            count_tokens(tokenizer, texts)
            t_tok.append(time.perf_counter() - start)

    curate_rate, tok_rate = args.rows / min(t_curate), args.rows / min(t_tok)
    print(f"manifest rows: {args.rows}  curated: {out.rows['captions']}  dropped: {out.rows['dropped']}  "
          f"drop reasons: {out.summary['drop_reasons']}")
    print(f"curate, whole stage (tables, tokenizer, plot, writes), best of {args.repeat}: "
          f"{curate_rate:,.0f} rows/s ({min(t_curate):.2f} s)")
    print(f"tokenizer only, the same {len(texts)} unique texts, best of {args.repeat}: "
          f"{tok_rate:,.0f} rows/s ({min(t_tok):.2f} s)")
    print(f"ratio curate / tokenizer-only: {curate_rate / tok_rate:.2f}")


if __name__ == "__main__":
    main()
