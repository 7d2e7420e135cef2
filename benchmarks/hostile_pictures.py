"""Cheap files with costly pixels: one picture of a digit per format and mode, at any size (100 megapixels for the
hostile suite), made once and kept in ~/.cache/digitlab/hostile/.

Each is a light page with MNIST test digit 0 (a 7) drawn dark across a third of it, so a server that decodes it
within its limits must answer "7". PNG, JPEG, TIFF, WebP and GIF are written by Pillow (16-bit colour PNG and
interlaced PNG by libvips), HEIC by pillow_heif as a grid of 512-pixel tiles (as phones save it) and as one
frame. They compress well: a 100-megapixel palette PNG is a few hundred kB, which is what makes them an attack.

    python benchmarks/hostile_pictures.py [--megapixels 100]   # makes and lists them
"""

from __future__ import annotations

import argparse
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pillow_heif
import pyvips
from PIL import Image

import digitlab

CACHE = Path.home() / ".cache" / "digitlab" / "hostile"
PAPER, INK = 235, 25


def page(mode: str, side: tuple[int, int]) -> Image.Image:
    """A light page of `side` pixels in `mode` with the digit 7 drawn dark across its middle third."""
    digit = digitlab.load_dataset("mnist").test.images[0, 0].numpy()  # a 7, white on black
    width, height = side
    box = min(width, height) // 3
    mask = Image.fromarray(digit).resize((box, box), Image.Resampling.BILINEAR)
    picture = Image.new("L", side, PAPER)
    picture.paste(INK, ((width - box) // 2, (height - box) // 2), mask)
    if mode in ("P", "P+tRNS"):
        indexed = picture.point(lambda level: 1 if level < 128 else 0)  # 0 paper, 1 ink
        indexed = indexed.convert("P") if indexed.mode != "P" else indexed
        indexed.putpalette([PAPER, PAPER, PAPER - 10, INK, INK, INK + 10] + [0] * 762)
        if mode == "P+tRNS":
            indexed.info["transparency"] = 0  # the paper transparent: the server flattens it
        return indexed
    if mode == "1":
        return picture.point(lambda level: 255 if level >= 128 else 0).convert("1")
    if mode == "I;16":
        return Image.fromarray(np.asarray(picture, np.uint16) * 257)
    if mode == "F":
        return Image.fromarray(np.asarray(picture, np.float32) / 255)
    if mode in ("LA", "RGBA"):
        alpha = Image.new("L", side, 250)  # not quite opaque, so no encoder drops it
        return Image.merge(mode, [*picture.convert(mode[:-1]).split(), alpha])
    return picture.convert(mode)


def _save(mode: str, file_format: str, **options) -> Callable[[tuple[int, int]], bytes]:
    def make(side: tuple[int, int]) -> bytes:
        buffer = io.BytesIO()
        picture = page(mode, side)
        if mode == "P+tRNS":
            options.setdefault("transparency", 0)
        picture.save(buffer, format=file_format, **options)
        return buffer.getvalue()

    return make


def _vips_png(bits: int, interlace: bool = False, bands: int = 3) -> Callable[[tuple[int, int]], bytes]:
    def make(side: tuple[int, int]) -> bytes:
        gray = pyvips.Image.new_from_array(np.asarray(page("L", side)))
        picture = gray.bandjoin([gray] * (bands - 1)) if bands > 1 else gray
        if bits == 16:
            picture = (
                (picture.cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16" if bands > 1 else "grey16")
            )
        return picture.pngsave_buffer(interlace=interlace, compression=6)

    return make


def _heic(tiles: bool) -> Callable[[tuple[int, int]], bytes]:
    def make(side: tuple[int, int]) -> bytes:
        pillow_heif.register_heif_opener()
        buffer = io.BytesIO()
        page("RGB", side).save(buffer, format="HEIF", quality=50, **({"tile_size": 512} if tiles else {}))
        return buffer.getvalue()

    return make


# name -> (file suffix, maker); the names are what serve_hostile reports
KINDS: dict[str, tuple[str, Callable[[tuple[int, int]], bytes]]] = {
    "png-1bit": (".png", _save("1", "PNG")),
    "png-L": (".png", _save("L", "PNG")),
    "png-LA": (".png", _save("LA", "PNG")),
    "png-P": (".png", _save("P", "PNG")),
    "png-P-transparent": (".png", _save("P+tRNS", "PNG")),
    "png-I16": (".png", _save("I;16", "PNG")),
    "png-RGB": (".png", _save("RGB", "PNG")),
    "png-RGBA": (".png", _save("RGBA", "PNG")),
    "png-RGB16": (".png", _vips_png(16)),
    "png-L-interlaced": (".png", _vips_png(8, interlace=True, bands=1)),
    "png-RGB-interlaced": (".png", _vips_png(8, interlace=True)),
    "jpeg-L": (".jpg", _save("L", "JPEG", quality=85)),
    "jpeg-RGB": (".jpg", _save("RGB", "JPEG", quality=85)),
    "jpeg-CMYK": (".jpg", _save("CMYK", "JPEG", quality=85)),
    "jpeg-RGB-progressive": (".jpg", _save("RGB", "JPEG", quality=85, progressive=True)),
    "jpeg-L-progressive": (".jpg", _save("L", "JPEG", quality=85, progressive=True)),
    "tiff-1bit": (".tif", _save("1", "TIFF", compression="group4")),
    "tiff-L": (".tif", _save("L", "TIFF", compression="tiff_deflate")),
    "tiff-I16": (".tif", _save("I;16", "TIFF", compression="tiff_deflate")),
    "tiff-F": (".tif", _save("F", "TIFF", compression="tiff_deflate")),
    "tiff-P": (".tif", _save("P", "TIFF", compression="tiff_deflate")),
    "tiff-RGB": (".tif", _save("RGB", "TIFF", compression="tiff_deflate")),
    "tiff-RGBA": (".tif", _save("RGBA", "TIFF", compression="tiff_deflate")),
    "tiff-CMYK": (".tif", _save("CMYK", "TIFF", compression="tiff_deflate")),
    "webp-RGB": (".webp", _save("RGB", "WEBP", quality=50, method=0)),
    "webp-RGBA": (".webp", _save("RGBA", "WEBP", quality=50, method=0)),
    "webp-lossless": (".webp", _save("RGB", "WEBP", lossless=True, method=0, quality=0)),
    "heic-grid": (".heic", _heic(tiles=True)),
    "heic-one-frame": (".heic", _heic(tiles=False)),
    "gif-P": (".gif", _save("P", "GIF")),
}


def picture(kind: str, megapixels: float = 100) -> bytes:
    """The file of `kind` (see KINDS) at about `megapixels`, square; made once and cached."""
    suffix, make = KINDS[kind]
    side = math.isqrt(int(megapixels * 1e6))
    path = CACHE / f"{kind}-{side}{suffix}"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        data = make((side, side))
        temporary = path.with_suffix(path.suffix + ".part")
        temporary.write_bytes(data)
        temporary.replace(path)
    return path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=100)
    args = parser.parse_args()
    for kind in KINDS:
        print(f"{kind}: {len(picture(kind, args.megapixels)):,} bytes", flush=True)


if __name__ == "__main__":
    main()
