"""Safe decoding of untrusted image bytes: validate, convert to RGB, fit, re-encode (PNG, JPEG or
WebP: ``download.image_format`` and ``download.image_quality``).

``prepare_image`` never raises on bad input: it returns a ``PreparedImage`` whose ``reason``
says why the bytes were rejected ("zero bytes", "not an image", "truncated or corrupt image",
"decompression bomb", "too small"). The bytes it returns are a pure function of the input bytes,
the limits and the encoding, so reruns store byte-identical files. Lossless WebP keeps every
pixel of the RGB image (as PNG does) in fewer bytes; JPEG and lossy WebP trade pixels for bytes.

Decoding happens in the calling thread: Pillow's decompression-bomb limit is a module global,
set from ``max_pixels`` for the duration of one call.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white
# Only these decoders see untrusted bytes: others (EPS runs Ghostscript, for one) answer "not an image".
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


@dataclass(frozen=True)
class PreparedImage:
    data: bytes | None         # the encoded RGB image, longest side <= max_side; None when rejected
    width: int | None
    height: int | None
    reason: str | None         # None when kept

    @classmethod
    def reject(cls, reason: str) -> "PreparedImage":
        return cls(None, None, None, reason)


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow raises DecompressionBombError above 2x the limit and warns above 1x; make both errors."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode == "I" or im.mode.startswith("I;16"):   # 16-bit grey: a plain convert would clip to white
        im = im.convert("I").point(lambda v: v / 256).convert("L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size that fits ``max_side`` keeping the aspect ratio (never upscales, never 0)."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_png(im: Image.Image) -> bytes:
    """Deterministic PNG bytes: no metadata, fixed compression level."""
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_image(im: Image.Image, image_format: str = "png", quality: int | str = "lossless") -> bytes:
    """Deterministic bytes of ``im`` (no metadata): PNG (always lossless), JPEG at ``quality``
    (1-100), or WebP at ``quality`` or ``"lossless"`` (``exact``: every pixel kept)."""
    if image_format == "png":
        return encode_png(im)
    buf = io.BytesIO()
    if image_format == "jpeg":
        if quality == "lossless":
            raise ValueError("JPEG has no lossless mode: give image_quality 1-100, or use png or webp")
        im.save(buf, format="JPEG", quality=quality, optimize=True)
    elif image_format == "webp":
        options = {"lossless": True, "exact": True, "quality": 100, "method": 4} \
            if quality == "lossless" else {"quality": quality, "method": 4}
        im.save(buf, format="WEBP", **options)
    else:
        raise ValueError(f"unknown image format {image_format!r}: png, jpeg or webp")
    return buf.getvalue()


def prepare_image(data: bytes | None, *, max_side: int, max_pixels: int, min_side: int = 1,
                  image_format: str = "png", quality: int | str = "lossless") -> PreparedImage:
    """Validate untrusted bytes and encode them as the stored image, or say why not."""
    if not data:
        return PreparedImage.reject("zero bytes")
    try:
        with _pixel_limit(max_pixels):
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                width, height = im.size
                if width * height > max_pixels:   # header check before any pixel is decoded
                    return PreparedImage.reject("decompression bomb")
                im.seek(0)                          # first frame of an animation
                if im.format == "JPEG":             # decode at the smallest DCT scale still >= the target
                    im.draft("RGB", fit_size(width, height, max_side))
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return PreparedImage.reject("decompression bomb")
    except UnidentifiedImageError:
        return PreparedImage.reject("not an image")
    except (OSError, SyntaxError, ValueError, EOFError):
        # Pillow reports truncated streams, bad CRCs and broken headers with these types
        return PreparedImage.reject("truncated or corrupt image")
    if min(rgb.size) < min_side:
        return PreparedImage.reject("too small")
    size = fit_size(*rgb.size, max_side)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return PreparedImage(encode_image(rgb, image_format, quality), size[0], size[1], None)
