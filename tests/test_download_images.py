"""images.prepare_image: every kind of bad bytes gets its reason; good bytes a deterministic RGB PNG."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from download_support import bomb_png, png_bytes
from flame_pipeline.data.images import fit_size, prepare_image

LIMITS = dict(max_side=32, max_pixels=1_000_000, min_side=8)


def decode(png: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(png))
    im.load()
    return im


@pytest.mark.parametrize("data, reason", [
    (b"", "zero bytes"),
    (None, "zero bytes"),
    (b"hello, not an image", "not an image"),
    (png_bytes(1, (64, 64))[:200], "truncated or corrupt image"),
    (bomb_png(), "decompression bomb"),
    (png_bytes(2, (4, 40)), "too small"),
])
def test_bad_bytes_are_rejected_with_their_reason(data, reason):
    got = prepare_image(data, **LIMITS)
    assert (got.data, got.width, got.height, got.reason) == (None, None, None, reason)


def test_pixel_limit_comes_from_max_pixels_and_is_restored():
    before = Image.MAX_IMAGE_PIXELS
    data = png_bytes(3, (40, 30))                     # 1200 pixels
    assert prepare_image(data, max_side=64, max_pixels=1199).reason == "decompression bomb"
    assert prepare_image(data, max_side=64, max_pixels=1200).reason is None
    # a header between 1x and 2x the limit: Pillow only warns; that must still reject
    assert prepare_image(bomb_png(1500, 1000), max_side=64, max_pixels=1_000_000).reason == "decompression bomb"
    assert Image.MAX_IMAGE_PIXELS == before


def test_good_image_is_resized_to_fit_and_stored_as_rgb_png():
    got = prepare_image(png_bytes(4, (80, 40)), **LIMITS)
    assert got.reason is None and (got.width, got.height) == (32, 16)
    im = decode(got.data)
    assert im.format == "PNG" and im.mode == "RGB" and im.size == (32, 16)
    assert got.data == prepare_image(png_bytes(4, (80, 40)), **LIMITS).data  # deterministic bytes


def test_small_image_is_not_upscaled_and_grey_becomes_rgb():
    got = prepare_image(png_bytes(5, (20, 10), mode="L"), **LIMITS)
    im = decode(got.data)
    assert (got.width, got.height) == (20, 10) and im.mode == "RGB"
    r, g, b = im.split()
    assert r.tobytes() == g.tobytes() == b.tobytes()


def test_16_bit_grey_is_scaled_not_clipped():
    im = Image.frombytes("I;16", (256, 16), b"".join((v * 257).to_bytes(2, "little") for v in range(256)) * 16)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out = decode(prepare_image(buf.getvalue(), max_side=256, max_pixels=10**6).data)
    assert [out.getpixel((x, 0))[0] for x in (0, 64, 128, 255)] == [0, 64, 128, 255]


def test_transparent_pixels_become_white():
    im = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (0, 0, 8, 16))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    out = decode(prepare_image(buf.getvalue(), **LIMITS).data)
    assert out.getpixel((2, 2)) == (0, 0, 255)
    assert out.getpixel((12, 2)) == (255, 255, 255)


def test_other_formats_and_exif_orientation():
    im = Image.new("RGB", (40, 20), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6                           # rotate 90 degrees on display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    got = prepare_image(buf.getvalue(), **LIMITS)
    assert (got.width, got.height) == (16, 32)   # 20x40 after the rotation, fitted into 32
    webp = io.BytesIO()
    im.save(webp, format="WEBP")
    assert prepare_image(webp.getvalue(), **LIMITS).reason is None


def test_only_safe_decoders_are_tried():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto showpage\n"
    assert prepare_image(eps, **LIMITS).reason == "not an image"
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, format="PPM")   # Pillow reads it, we do not
    assert prepare_image(buf.getvalue(), **LIMITS).reason == "not an image"


def test_large_jpeg_is_decoded_reduced_and_still_fits_exactly():
    im = Image.radial_gradient("L").resize((1024, 768)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    got = prepare_image(buf.getvalue(), max_side=100, max_pixels=10**7)
    assert (got.width, got.height) == (100, 75)
    out = decode(got.data)
    ref = im.resize((100, 75), Image.Resampling.LANCZOS)
    diff = [abs(a - b) for a, b in zip(out.tobytes(), ref.tobytes())]
    assert sum(diff) / len(diff) < 3            # DCT-scaled decode: the same picture


def test_fit_size():
    assert fit_size(1000, 10, 32) == (32, 1)
    assert fit_size(30, 20, 64) == (30, 20)
    assert fit_size(64, 64, 64) == (64, 64)


def test_lossless_webp_keeps_every_pixel_in_fewer_bytes_and_jpeg_trades_pixels():
    g = Image.radial_gradient("L").resize((32, 24))
    im = Image.merge("RGB", [g, g.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.linear_gradient("L").resize((32, 24))])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    png = prepare_image(buf.getvalue(), **LIMITS)
    webp = prepare_image(buf.getvalue(), **LIMITS, image_format="webp", quality="lossless")
    jpeg = prepare_image(buf.getvalue(), **LIMITS, image_format="jpeg", quality=90)
    assert decode(webp.data).format == "WEBP" and decode(jpeg.data).format == "JPEG"
    assert decode(webp.data).tobytes() == decode(png.data).tobytes()       # lossless: same pixels
    assert len(webp.data) < len(png.data)
    diff = [abs(a - b) for a, b in zip(decode(jpeg.data).tobytes(), decode(png.data).tobytes())]
    assert 0 < sum(diff) / len(diff) < 3                                      # lossy, close
    assert webp.data == prepare_image(buf.getvalue(), **LIMITS, image_format="webp").data


@pytest.mark.parametrize("fmt, quality, message", [
    ("jpeg", "lossless", "jpeg has no lossless mode"), ("png", 90, "png is always lossless"),
    ("webp", 0, "image_quality 0: give 1-100")])
def test_image_encoding_settings_that_cannot_work_are_config_errors(tmp_path, fmt, quality, message):
    from flame_pipeline.config import load_profile
    with pytest.raises(ValueError, match=message):
        load_profile("tiny", "params.yaml", {"download.image_format": fmt, "download.image_quality": quality})
