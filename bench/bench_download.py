"""Download-stage throughput (samples/s) against raw source iteration, measured in the same run.

    .venv/bin/python bench/bench_download.py [--scenes 2000] [--urls 600] [--workers 4] [--repeat 3]

Two paths:
- the built-in scene generator: iterating ``generate_scenes`` alone (baseline) vs the whole
  stage (validate, re-encode, MDS chunks, manifest, merge);
- a URL list served by a local 127.0.0.1 HTTP server: fetching alone through the URL source
  (baseline, fresh byte cache) vs the whole stage (fresh data dir, so it fetches too).
The ratio stage/baseline says what the stage adds on top of producing the rows. Each figure
is the best of ``--repeat`` runs, baseline and stage interleaved.
The curation stage's throughput on the scene run's manifest is printed too.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # bars would only slow the figures down

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from flame_pipeline.config import UrlListSource, load_profile  # noqa: E402
from flame_pipeline.data.curate import curate  # noqa: E402
from flame_pipeline.data.download import download  # noqa: E402
from flame_pipeline.data.scenes import generate_scenes  # noqa: E402
from flame_pipeline.data.urls import iter_url_list  # noqa: E402


def profile(data_dir: Path, sources: list[dict]):
    return load_profile("default", ROOT / "params.yaml", {
        "data_dir": str(data_dir), "download.sources": sources, "download.chunk_size": 500})


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best_of(repeat: int, baseline, stage) -> tuple[float, object, float, object]:
    """Fastest of ``repeat`` runs each, baseline and stage interleaved so that both see the
    same load; each callable gets the run index (for fresh directories and caches)."""
    base_runs, stage_runs = [], []
    for i in range(repeat):
        base_runs.append(timed(lambda: baseline(i)))
        stage_runs.append(timed(lambda: stage(i)))
    return (*min(base_runs, key=lambda r: r[0]), *min(stage_runs, key=lambda r: r[0]))


def line(name: str, n: int, base_s: float, stage_s: float) -> None:
    base, stage = n / base_s, n / stage_s
    print(f"{name:<22} {n:>6} rows  source only {base:9.1f} samples/s   "
          f"full stage {stage:9.1f} samples/s   stage/source {stage / base:5.2f}")


def bench_scenes(n: int, repeat: int, tmp: Path):
    src = {"kind": "scenes", "n_train": n, "n_test": 0, "image_size": 64}
    cfgs = [profile(tmp / f"scenes{i}", [src]) for i in range(repeat)]
    base_s, rows, stage_s, out = best_of(
        repeat, lambda i: sum(1 for _ in generate_scenes(cfgs[i].download.sources[0], cfgs[i].seed)),
        lambda i: download(cfgs[i]))
    assert out.rows["manifest"] == rows
    line("scene generator", rows, base_s, stage_s)
    return cfgs[0]


def photo_like(seed: int, size: int = 320) -> bytes:
    """A JPEG the size of a small web photo: smooth gradients plus noise."""
    rng = random.Random(seed)
    im = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    im = Image.blend(im, Image.effect_noise((size, size), 40).convert("RGB"), 0.4)
    im = Image.eval(im, lambda v, k=rng.randint(0, 80): min(255, v + k))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def bench_urls(n: int, workers: int, repeat: int, tmp: Path) -> None:
    """Files served by ``python -m http.server`` in its own process (so it takes no GIL from us)."""
    www = tmp / "www"
    www.mkdir()
    for i in range(32):
        (www / f"{i}.jpg").write_bytes(photo_like(i))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(base)
        # distinct URLs (the byte cache is per URL); the server ignores the query
        (tmp / "list.tsv").write_text("url\tcaption\n" + "".join(
            f"{base}/{i % 32}.jpg?n={i}\ta photo number {i}\n" for i in range(n)))
        src = {"kind": "url_list", "path": str(tmp / "list.tsv"), "workers": workers}
        base_s, rows, stage_s, out = best_of(
            repeat, lambda i: sum(1 for _ in iter_url_list(UrlListSource(**src), tmp / f"fetch-only-{i}")),
            lambda i: download(profile(tmp / f"urls{i}", [src])))
        assert out.rows == {"manifest": rows, "shards": rows}, out.summary
        line(f"url list ({workers} workers)", rows, base_s, stage_s)
    finally:
        server.terminate()
        server.wait()


def _wait_for(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(url + "/0.jpg").raise_for_status()
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def bench_curate(cfg) -> None:
    s, out = timed(lambda: curate(cfg))
    n = out.rows["captions"] + out.rows["dropped"]
    print(f"{'curation (scenes)':<22} {n:>6} rows  {n / s:9.1f} samples/s "
          f"(full stage incl. loading the {cfg.embed.llm} tokenizer)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=2000)
    ap.add_argument("--urls", type=int, default=600)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        scenes_cfg = bench_scenes(args.scenes, args.repeat, tmp)
        bench_urls(args.urls, args.workers, args.repeat, tmp)
        bench_curate(scenes_cfg)


if __name__ == "__main__":
    main()
