"""Big pictures decoded already reduced (digitlab.images.decode): the same pixels as decoding whole and reducing,
in every mode, upright, with the decoding cost read from the header and refused over a limit."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from digitlab.errors import ImageError, ImageTooLarge
from digitlab.images import heif
from digitlab.images.decode import DECODER_BASE, STREAM_ROWS, reduce_any
from digitlab.images.preprocess import decode_image, inspect_image


def page(size=(2600, 2100), seed=0) -> np.ndarray:
    """A gray page (H, W) uint8 with random blobs of ink: no two reductions agree by chance."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 50 + 1, size[0] // 50 + 1), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR))


def encoded(picture: Image.Image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def whole_then_reduced(picture: Image.Image, mode: str, factor: int) -> np.ndarray:
    """What decoding whole would give: the picture converted to `mode`, then Pillow's reduce."""
    return np.asarray(picture.convert(mode).reduce(factor), np.float32)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "1", "I;16"])
def test_reduce_any_gives_pillows_reduce_in_every_mode_a_band_at_a_time(mode):
    gray = Image.fromarray(page((1000, 700)))
    picture = {
        "P": gray.convert("P", palette=Image.Palette.ADAPTIVE),
        "1": gray.convert("1"),
        "I;16": Image.fromarray(np.asarray(gray, np.uint16) * 257),
    }.get(mode) or gray.convert(mode)
    reduced = reduce_any(picture, 3)
    assert reduced.size == (334, 234)
    if mode in ("L", "RGB", "RGBA", "LA"):  # the modes Pillow reduces itself: exactly its answer
        assert np.array_equal(np.asarray(reduced), np.asarray(picture.reduce(3)))
    elif mode == "I;16":  # scaled to 8 bits by the range, as the float path did
        expected = np.asarray(Image.fromarray(np.asarray(gray)).reduce(3), np.float32)
        assert np.abs(np.asarray(reduced, np.float32) - expected).max() <= 1
    else:  # converted to L a band at a time: Pillow's own conversion, then its reduce
        assert np.abs(np.asarray(reduced, np.float32) - whole_then_reduced(picture, "L", 3)).max() <= 1
    assert reduce_any(picture, 1) is picture


@pytest.mark.parametrize(
    "name, make",
    [
        ("RGB PNG", lambda gray: encoded(gray.convert("RGB"), "PNG")),
        ("16-bit PNG", lambda gray: encoded(Image.fromarray(np.asarray(gray, np.uint16) * 257), "PNG")),
        ("palette PNG", lambda gray: encoded(gray.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")),
        ("1-bit PNG", lambda gray: encoded(gray.convert("1"), "PNG")),
        ("RGB TIFF", lambda gray: encoded(gray.convert("RGB"), "TIFF", compression="tiff_deflate")),
        ("lossy WebP", lambda gray: encoded(gray.convert("RGB"), "WEBP", quality=95)),
    ],
)
def test_streamed_formats_decode_like_the_whole_picture_reduced(name, make):
    """libvips reads these a band of rows at a time; the reduced picture matches Pillow's whole decode reduced."""
    gray = Image.fromarray(page())
    data = make(gray)
    decoded = decode_image(data, name)
    assert decoded.size == (1300, 1050) and decoded.info["digitlab.scale"] == 2
    whole = Image.open(io.BytesIO(data))
    if whole.mode.startswith("I"):  # Pillow's own conversion clips 16-bit levels at 255: scale them instead
        whole = Image.fromarray(np.rint(np.asarray(whole) / 257).astype(np.uint8))
    ours = np.asarray(decoded.convert("L"), np.float32)
    difference = np.abs(ours - whole_then_reduced(whole, "L", 2))
    assert difference.mean() < 1.0 and difference.max() <= (24 if "WebP" in name else 2), name  # WebP scales itself


def test_a_rotated_picture_comes_out_upright_on_the_streamed_path():
    picture = Image.fromarray(page((2400, 1200)))
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: the camera was held upright
    data = encoded(picture, "PNG", exif=exif)
    decoded = decode_image(data, "turned.png")
    assert decoded.size == (600, 1200)
    upright = np.asarray(picture.transpose(Image.Transpose.ROTATE_270).reduce(2), np.float32)
    assert np.abs(np.asarray(decoded, np.float32) - upright).max() <= 1


@pytest.mark.slow  # encoding the HEIC takes ~9 s on a busy machine
@pytest.mark.skipif(not heif.available(), reason="this libheif has no tile API")
@pytest.mark.parametrize("tiles", [(6, 4, 512), (1, 1, 2600)])
def test_a_heic_is_decoded_a_tile_at_a_time_like_the_whole_picture(tiles):
    pillow_heif.register_heif_opener()
    picture = Image.fromarray(page((2600, 1800))).convert("RGB")
    data = encoded(picture, "HEIF", quality=90, **({"tile_size": 512} if tiles[0] > 1 else {}))
    grid = heif.tiling(data)
    assert (grid.columns, grid.rows, grid.tile_width) == tiles
    decoded = decode_image(data, "tiled.heic")
    assert decoded.size == (1300, 900)
    whole = whole_then_reduced(Image.open(io.BytesIO(data)), "L", 2)
    difference = np.abs(np.asarray(decoded.convert("L"), np.float32) - whole)
    assert difference.max() <= 1  # the same decoder, tile by tile


def test_the_decoding_cost_comes_from_the_header_and_is_refused_over_the_limit():
    gray = Image.fromarray(page((3000, 2000)))
    baseline = encoded(gray.convert("RGB"), "JPEG", quality=90)
    progressive = encoded(gray.convert("RGB"), "JPEG", quality=90, progressive=True, subsampling=0)
    streamed = encoded(gray.convert("RGB"), "PNG")
    assert inspect_image(baseline).bytes == DECODER_BASE + 4 * 1500 * 1000  # decoded at 1/2 scale by libjpeg
    cost = inspect_image(progressive)
    assert cost.bytes == pytest.approx(DECODER_BASE + 2 * 3000 * 2000 * 3, rel=0.01)  # every coefficient, 4:4:4
    assert "progressive JPEG" in cost.why
    with pytest.raises(ImageTooLarge, match=r"progressive JPEG .* about 68 MB, more than the 50 MB allowed"):
        inspect_image(progressive, "p.jpg", max_decode_bytes=50_000_000)
    with pytest.raises(ImageTooLarge, match="more than the 50 MB allowed"):
        decode_image(progressive, "p.jpg", max_decode_bytes=50_000_000)
    assert decode_image(progressive, "p.jpg").size == (1500, 1000)  # without the limit (the CLI), it is read
    assert inspect_image(streamed).bytes == DECODER_BASE + STREAM_ROWS * 3000 * 3  # a band of RGB rows


def test_a_cut_png_is_refused_from_its_chunks_before_any_decoding():
    data = encoded(Image.fromarray(page((600, 400))), "PNG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        inspect_image(data[: len(data) // 2], "cut.png")


@pytest.mark.slow  # makes a 100-megapixel picture: ~5 s
def test_a_100_megapixel_palette_png_with_transparency_costs_little_memory(tmp_path):
    """The issue's case: a 100-megapixel palette PNG with transparency took +2.3 GB; now it is streamed."""
    path = tmp_path / "palette.png"
    picture = Image.new("P", (10_000, 10_000), 0)
    picture.putpalette([235, 235, 235, 20, 20, 20] + [0] * 762)
    picture.paste(1, (4000, 3000, 4600, 7000))
    picture.save(path, transparency=0)
    del picture
    script = textwrap.dedent(f"""
        from digitlab.images.preprocess import decode_image, prepare
        data = open({str(path)!r}, "rb").read()
        def status(key):
            return int([l for l in open("/proc/self/status") if l.startswith(key)][0].split()[1]) * 1024
        open("/proc/self/clear_refs", "w").write("5")
        idle = status("VmRSS")
        prepare(decode_image(data))
        print((status("VmHWM") - idle) / 1e6)
    """)
    grown = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert grown < 150  # MB; decoding whole took 2,300 (Pillow's P, then LA, then floats)
