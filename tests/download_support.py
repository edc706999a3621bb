"""Test inputs for the download tests: real image bytes, a bomb, and a real HTTP server."""
from __future__ import annotations

import collections
import io
import random
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

from profiles import profile_at


def profile(data_dir: Path, sources: list[dict], **download):
    """The tiny profile at ``data_dir`` reading ``sources``, with ``download.<key>`` overrides."""
    return profile_at(data_dir, {"download.sources": sources,
                                 **{f"download.{k}": v for k, v in download.items()}})


def png_bytes(seed: int = 0, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    """A small deterministic image of seeded noise (incompressible, so truncation bites)."""
    im = Image.frombytes(mode, size, random.Random(seed).randbytes(size[0] * size[1] * len(mode)))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A well-formed PNG header claiming a huge image, with almost no data: ~60 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


class ImageServer:
    """A threaded HTTP server on 127.0.0.1 with one path per kind of answer; counts hits.

    /good/<n>.png  a PNG (``?delay=s`` waits first)   /404.png    404
    /flaky.png     500 on the first request, then a PNG  /always500.png  500
    /slow.png      waits ``slow_s`` before answering     /empty.png  200 with no body
    /truncated.png half a PNG                            /text.png   text, not an image
    /bomb.png      a decompression bomb                  /badgzip.png  claims gzip, is not
    /moved.png     302 to /good/8.png   /to-ftp.png  302 to an ftp URL   /loop.png  302 to itself
    """

    def __init__(self, slow_s: float = 1.0):
        self.hits: collections.Counter[str] = collections.Counter()
        self.times: collections.defaultdict[str, list[float]] = collections.defaultdict(list)
        self.slow_s = slow_s
        self.redirects = {"/moved.png": "/good/8.png", "/to-ftp.png": "ftp://127.0.0.1/x.png",
                          "/loop.png": "/loop.png"}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                path, _, query = self.path.partition("?")
                with server.lock:
                    server.hits[path] += 1
                    server.times[path].append(time.monotonic())
                    n_hits = server.hits[path]
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                if "delay" in params:
                    time.sleep(float(params["delay"]))
                status, body = server.answer(path, n_hits)
                self.send_response(status)
                self.send_header("Content-Type", "image/png")
                if path == "/badgzip.png":
                    self.send_header("Content-Encoding", "gzip")
                if path in server.redirects:
                    self.send_header("Location", server.redirects[path])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, path: str, n_hits: int) -> tuple[int, bytes]:
        if path.startswith("/good/"):
            return 200, png_bytes(int(Path(path).stem))
        if path == "/flaky.png":
            return (500, b"") if n_hits == 1 else (200, png_bytes(99))
        if path == "/always500.png":
            return 500, b""
        if path == "/slow.png":
            time.sleep(self.slow_s)
            return 200, png_bytes(98)
        if path == "/empty.png":
            return 200, b""
        if path == "/truncated.png":
            good = png_bytes(97, size=(64, 64))
            return 200, good[: len(good) // 2]
        if path == "/text.png":
            return 200, b"hello, this is not an image\n"
        if path == "/badgzip.png":
            return 200, b"this is not gzip data at all"
        if path in self.redirects:
            return 302, b""
        if path == "/bomb.png":
            return 200, bomb_png()
        return 404, b"not found"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "ImageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
