"""Does the chain's cost per run stay flat as the data grows? Synthetic datasets of 20,000 and
200,000 samples through the real curate, embed and train stages (the ``tiny`` profile: its tiny
random LLM and tiny ViT), each stage a ``flame`` process of its own.

    .venv/bin/python bench/bench_scale.py [--sizes 20000 200000] [--rounds 3] [--emoji-images 1000]

Printed:
1. Per size: each stage's wall time and peak RSS (the stage process's own ``VmHWM``); time to
   first training step = the wall time of the train stage run for one step (start-up,
   streaming's index, one step, the export), the best of ``--rounds`` runs alternating between
   the sizes (a single run of a few seconds moves by 20% on a shared machine; the peak RSS is
   the largest of them); bytes per sample on disk of the raw shards, the train shards, the
   embed shards and the embedding cache.
   ``time_to_first_step 200k/20k = X`` and ``peak_rss 200k/20k = Y`` (the larger of embed's and
   train's ratios). Goal: both <= 1.2.
2. The data loader, on 4,096 samples stored as the ``paper`` profile stores them (256 px JPEG 90,
   cropped to 224 px): images/s of a DataLoader with one worker streaming an epoch of
   ``TrainStream`` (FLAME's items: image decoded and augmented to uint8 pixels, embeddings
   drawn, batches collated and sent to the main process; the training loop normalises the
   pixels on its device) against decoding and augmenting the same images in a loop alone,
   measured alternately; ``loader/decode = Z``. Goal: >= 0.8.
3. Bytes per image of real emoji art (the default profile's 64 px Apple drawings, read from the
   npm packages when setup installed them) stored as PNG, lossless WebP, WebP 90 and JPEG 90,
   and of one embedding-cache batch stored as float32 and as float16.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flame_pipeline.config import load_profile  # noqa: E402
from flame_pipeline.data.download import MANIFEST_SCHEMA, SHARD_COLUMNS  # noqa: E402
from flame_pipeline.data.images import encode_image, prepare_image  # noqa: E402
from flame_pipeline.paths import Paths  # noqa: E402
from flame_pipeline.shards import write_shards  # noqa: E402

COLOURS = ["red", "green", "blue", "yellow", "purple", "cyan", "orange", "grey"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]


def overrides(root: Path) -> list[str]:
    return [f"data_dir={root}", "curate.test_fraction=0.01", "curate.val_fraction=0",
            "embed.splits=[train]", "embed.plan=[[caption, single]]", "eval.prompt_mode=single",
            "embed.batch_size=64",
            "train.steps=1", "train.batch_size=64", "train.warmup_steps=0", "train.eval_every=0"]


def write_download(root: Path, n: int, side: int = 16, extra: tuple[str, ...] = ()) -> None:
    """What the download stage would leave for ``n`` synthetic samples: raw shards of ``side``
    px images (each its own: 4 x 4 random colours, smoothly enlarged) and the manifest, every
    row kept."""
    cfg = load_profile("tiny", ROOT / "params.yaml", overrides(root) + list(extra))
    rng = np.random.default_rng(n)
    rows, images = [], []
    for i in range(n):
        pixels = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        data = encode_image(pixels.resize((side, side), Image.Resampling.BILINEAR),
                            cfg.download.image_format, cfg.download.image_quality)
        key = f"synthetic/{i:07d}"
        caption = f"a {COLOURS[i % 8]} {SHAPES[i // 8 % 6]} number {i}"
        images.append({"key": key, "image": data})
        rows.append({"key": key, "source": "synthetic", "source_ref": str(i), "split": None,
                     "caption": caption, "short_caption": None, "long_caption": None,
                     "language": "en", "labels": "{}", "group": None, "status": "kept",
                     "reason": None, "n_bytes": len(data), "width": side, "height": side,
                     "sha256": hashlib.sha256(data).hexdigest()})
    paths = Paths.of(cfg)
    write_shards(paths.raw_shards, SHARD_COLUMNS, images)
    pl.DataFrame(rows, schema=MANIFEST_SCHEMA, orient="row").write_parquet(paths.manifest)


# runs the flame CLI and reports its own peak RSS (VmHWM): the rusage of a child would also
# count the memory of this process, which Linux carries over from fork into the child's maxrss
PEAK = """
import runpy, sys
sys.argv = ["flame"] + sys.argv[1:]
try:
    runpy.run_module("flame_pipeline.cli", run_name="__main__")
finally:
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    sys.stderr.write("peak_kib " + hwm.split()[1] + "\\n")
"""


def run_stage(root: Path, stage: str, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one ``flame`` stage process."""
    cmd = [sys.executable, "-c", PEAK, stage, "--profile", "tiny", "--params", str(ROOT / "params.yaml")]
    for item in overrides(root) + list(extra):
        cmd += ["--set", item]
    # one torch thread: the figures are ratios between sizes, and a shared machine's spare
    # threads only add noise
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DAGSTER_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1")
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{done.stderr[-3000:]}")
    return wall, int(done.stderr.rsplit("peak_kib ", 1)[1].split()[0]) / 1024


def bytes_under(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(root: Path, n: int) -> dict:
    """The curate and embed stages on ``n`` samples; the train stage comes after (``first_steps``)."""
    write_download(root, n)
    out = {"n": n}
    for stage in ("curate", "embed"):
        out[stage] = run_stage(root, stage)
    paths = Paths(root)
    samples = pl.read_parquet(paths.captions, columns=["split"])["split"].value_counts()
    train = int(samples.filter(pl.col("split") == "train")["count"][0])
    cache = bytes_under(paths.embed_cache)
    out["bytes"] = {"raw shards": bytes_under(paths.raw_shards) / n,
                    "train shards": bytes_under(paths.train_shards) / train,
                    "embed shards": bytes_under(paths.embed_shards) / train,
                    "embedding cache": cache / train}
    return out


def first_steps(roots: dict[int, Path], rounds: int) -> dict[int, tuple[float, float]]:
    """Per size: (best wall seconds, largest peak RSS) of ``rounds`` train stage runs of one
    step, the sizes taking turns; each run starts without a checkpoint."""
    runs = {n: [] for n in roots}
    for _ in range(rounds):
        for n, root in roots.items():
            shutil.rmtree(Paths(root).models, ignore_errors=True)
            runs[n].append(run_stage(root, "train"))
    return {n: (min(w for w, _ in r), max(p for _, p in r)) for n, r in runs.items()}


# the loader's data: the paper profile's stored images (256 px JPEG 90) cropped to 224 px
LOADER = ("download.image_format=jpeg", "download.image_quality=90", "vision.image_size=224")


def loader_ratio(root: Path, n: int = 4096, rounds: int = 3) -> tuple[float, float]:
    """(loader images/s with one worker, decode + augment images/s alone) over ``n`` samples of
    256 px JPEGs, best of alternating rounds; a round streams one epoch."""
    import torch
    from torch.utils.data import DataLoader
    from flame_pipeline.shards import open_shards
    from flame_pipeline.train.data import StoredEmbeddings, TrainStream, item_generator
    from flame_pipeline.vision.preprocess import train_pixels
    write_download(root, n, side=256, extra=LOADER)
    for stage in ("curate", "embed"):
        run_stage(root, stage, LOADER)
    torch.set_num_threads(1)
    cfg = load_profile("tiny", ROOT / "params.yaml", overrides(root) + list(LOADER))
    data = TrainStream(cfg, StoredEmbeddings(cfg), 64)
    shards = open_shards(Paths.of(cfg).train_shards)
    images = [shards.get_item(i)["image"] for i in range(len(shards))]
    loader_best = decode_best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        seen = sum(len(batch["pixels"]) for batch in
                   DataLoader(data, batch_size=64, num_workers=1, drop_last=True))
        loader_best = max(loader_best, seen / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for i, image in enumerate(images):
            train_pixels(image, cfg.vision.image_size, cfg.train.crop_scale, item_generator(0, 0, i))
        decode_best = max(decode_best, len(images) / (time.perf_counter() - t0))
    return loader_best, decode_best


def emoji_bytes(limit: int) -> dict[str, float] | None:
    folder = ROOT / "packages" / "npm" / "emoji-datasource-apple@16.0.0" / "img" / "apple" / "64"
    files = sorted(folder.glob("*.png"))[:limit]
    if not files:
        return None
    limits = dict(max_side=256, max_pixels=10**7)
    out = {}
    for name, fmt, quality in (("PNG", "png", "lossless"), ("WebP lossless", "webp", "lossless"),
                               ("WebP 90", "webp", 90), ("JPEG 90", "jpeg", 90)):
        sizes = [len(prepare_image(f.read_bytes(), **limits, image_format=fmt, quality=quality).data)
                 for f in files]
        out[name] = sum(sizes) / len(sizes)
    return out


def cache_bytes(root: Path) -> tuple[int, int]:
    """(bytes of one embedding-cache batch file as stored, the same arrays saved as float32)."""
    batch = max(Paths(root).embed_cache.rglob("*.npz"), key=lambda f: f.stat().st_size)
    with np.load(batch) as z:
        arrays = {k: z[k] for k in z.files}
    buf = io.BytesIO()
    np.savez(buf, **{**arrays, "emb": arrays["emb"].astype(np.float32)})
    return batch.stat().st_size, len(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[20_000, 200_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--emoji-images", type=int, default=1000)
    args = ap.parse_args()
    small_n, large_n = args.sizes
    with tempfile.TemporaryDirectory() as tmp:
        # the embedding cache sits beside the data dir: one per size
        roots = {n: Path(tmp) / str(n) / "data" for n in (small_n, large_n)}
        runs = {}
        for n, root in roots.items():
            root.mkdir(parents=True)
            runs[n] = measure(root, n)
        for n, train in first_steps(roots, args.rounds).items():
            r = runs[n]
            r["train"] = train
            print(f"{n} samples: " + ", ".join(f"{s} {r[s][0]:.1f} s / {r[s][1]:.0f} MiB peak RSS"
                                               for s in ("curate", "embed", "train")))
            print("  bytes per sample: " + ", ".join(f"{k} {v:,.0f}" for k, v in r["bytes"].items()))
        small, large = runs[small_n], runs[large_n]
        label = f"{large_n // 1000}k/{small_n // 1000}k"
        first_step = large["train"][0] / small["train"][0]
        rss = {s: large[s][1] / small[s][1] for s in ("embed", "train")}
        print(f"time_to_first_step {label} = {first_step:.2f}  (goal <= 1.2)")
        print(f"peak_rss {label} = {max(rss.values()):.2f}  (embed {rss['embed']:.2f}, "
              f"train {rss['train']:.2f}; goal <= 1.2)")
        loader, decode = loader_ratio(Path(tmp) / "loader" / "data")
        print(f"data loader, 1 worker, 256 px JPEGs to 224 px: {loader:.0f} images/s; decode + "
              f"augment alone: {decode:.0f} images/s; loader/decode = {loader / decode:.2f}  (goal >= 0.8)")
        stored, f32 = cache_bytes(Path(tmp) / str(small_n) / "data")
        print(f"embedding cache batch file: float16 {stored:,} bytes, as float32 {f32:,} bytes "
              f"(float32/float16 = {f32 / stored:.2f})")
    sizes = emoji_bytes(args.emoji_images)
    if sizes is None:
        print("emoji images: not installed (bash scripts/setup_npm.sh)")
    else:
        png = sizes["PNG"]
        print(f"bytes per image, {args.emoji_images} Apple emoji at 64 px: " +
              ", ".join(f"{k} {v:,.0f} ({v / png:.2f} of PNG)" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
