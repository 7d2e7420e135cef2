"""Big pictures decoded already reduced to about WORKING_SIDE px, at a memory cost known before any pixel is decoded.

Pillow decodes a whole PNG, TIFF, WebP or GIF into its own mode at full size (RGB and RGBA take 4 bytes a pixel:
400 MB for 100 megapixels), and its `reduce()` refuses the modes `1`, `P` and `I;16`. So here:

- JPEG is decoded by libjpeg already scaled by 1/2, 1/4 or 1/8 (Pillow's draft mode), as before;
- PNG, TIFF and WebP over twice WORKING_SIDE are read by libvips a band of rows at a time (sequential access)
  and box-averaged as they stream (WebP through libwebp's own scaled decoding): the full-size picture never
  exists in any mode;
- HEIC is decoded one tile at a time (digitlab.images.heif);
- everything else Pillow decodes (GIF, BMP, PNM) and every picture handed in as a PIL image is reduced
  by `reduce_any`, a band of rows at a time, converted to 8 bits per band first: no full-size copy in
  another mode and no full-size float array.

Some decoders must hold the whole picture whatever is done after them: an interlaced PNG (its passes), a
progressive JPEG (libjpeg keeps every DCT coefficient), a lossless or animated WebP (libwebp keeps the
ARGB picture), a TIFF stored in one huge strip, a HEIC that is not a grid of tiles, and Pillow's own decoders.
`decode_cost` reads that from the header, so a server can refuse an image whose decoding would cost more
than it allows (digitlab.serving answers 413) before decoding it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips
from PIL import Image

from ..errors import ImageError
from . import heif

WORKING_SIDE = 1024  # big pictures are decoded (or reduced right after) to about this; a number is read at it
SCALE_KEY = "digitlab.scale"  # Image.info key: picture pixels per decoded pixel (JPEGs are decoded reduced)
STREAMED = ("PNG", "TIFF", "WEBP")  # formats libvips reads a band of rows at a time
STRIP_BLOCKS = 32  # reduce_any converts and averages this many output rows at a time
DECODER_BASE = 32_000_000  # bytes any decoding holds besides the picture: libraries' buffers, the reduced copy
STREAM_ROWS = 256  # rows of the source a streaming decoder holds at once, generously (libvips' line buffers)
PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}  # others: 4 bytes a pixel
TO_8_BITS = {"1": "L", "P": "L", "PA": "LA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB"}
WIDE = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16- and 32-bit gray: scaled to 8 bits through numpy
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # EXIF orientation -> what turns the picture upright (as ImageOps.exif_transpose)

pyvips.cache_set_max(0)  # each upload is decoded once: libvips' operation cache would only keep its pixels alive


@dataclass(frozen=True)
class DecodeCost:
    """What decoding a picture holds in memory at once (bytes, estimated from its header), and why."""

    bytes: int
    why: str


def decode_cost(opened: Image.Image, file) -> DecodeCost:
    """How much memory decoding `opened` (just opened by Pillow from `file`, a path or binary file) will hold
    at once with `decode_reduced`: the whole picture for the decoders that need it, a few rows otherwise, and
    DECODER_BASE for the decoder's own tables and the reduced picture."""
    cost = _decoder_cost(opened, file)
    return DecodeCost(cost.bytes + DECODER_BASE, cost.why)


def _decoder_cost(opened: Image.Image, file) -> DecodeCost:
    width, height = opened.size
    factor = max(width, height) // WORKING_SIDE
    kind = opened.format
    if kind in ("JPEG", "MPO"):
        if opened.info.get("progressive") or opened.info.get("progression"):
            layers = getattr(opened, "layer", None) or [("", 1, 1, 0)]
            most = max(h * v for _, h, v, _ in layers)
            share = sum(h * v for _, h, v, _ in layers) / most  # subsampled components hold fewer coefficients
            return DecodeCost(round(2 * width * height * share), "progressive JPEG (libjpeg keeps every coefficient)")
        draft = 1  # the scale draft_size leads libjpeg to: the largest of 1/2, 1/4, 1/8 still WORKING_SIDE long
        while draft < 8 and max(width, height) // (2 * draft) >= WORKING_SIDE:
            draft *= 2
        return DecodeCost(4 * width * height // draft**2, "JPEG decoded at reduced scale")
    if factor >= 2 and kind in STREAMED:
        return _streamed_cost(opened, file)
    if factor >= 2 and kind == "HEIF" and heif.available():
        grid = heif.tiling(_bytes_of(file))
        band = grid.tile_height * grid.width * 4 if grid.columns > 1 else 0  # a band of tile rows, joined
        why = "HEIC decoded one tile at a time" if grid.columns * grid.rows > 1 else "HEIC that is not tiled, whole"
        return DecodeCost(grid.tile_bytes * grid.columns + band, why)
    if kind == "HEIF":
        return DecodeCost(round(7.3 * width * height), "HEIC decoded whole (pillow_heif)")
    return DecodeCost(PILLOW_BYTES.get(opened.mode, 4) * width * height, f"{kind} decoded whole by Pillow")


def _streamed_cost(opened: Image.Image, file) -> DecodeCost:
    width, height = opened.size
    pixel = _sample_bytes(opened)
    streaming = DecodeCost(STREAM_ROWS * width * pixel, f"{opened.format} streamed a band of rows at a time")
    if opened.format == "PNG" and opened.info.get("interlace"):
        return DecodeCost(width * height * pixel, "interlaced PNG (held whole while its passes arrive)")
    if opened.format == "TIFF":
        tags = opened.tag_v2  # type: ignore[attr-defined]  # TiffImageFile
        if 322 in tags and 323 in tags:  # TileWidth, TileLength
            block = int(tags[322]) * int(tags[323]) * pixel
        else:
            block = min(int(tags.get(278, height)), height) * width * pixel  # RowsPerStrip
        return DecodeCost(2 * block + streaming.bytes, "TIFF read a strip or tile at a time")
    if opened.format == "WEBP":
        chunks = _webp_chunks(_bytes_of(file))
        if b"VP8L" in chunks or b"ANIM" in chunks:
            return DecodeCost(4 * width * height, "lossless or animated WebP (libwebp holds the whole picture)")
        if b"ALPH" in chunks:
            return DecodeCost(width * height + streaming.bytes, "WebP with transparency (a whole alpha plane)")
    return streaming


def _sample_bytes(opened: Image.Image) -> int:
    """Bytes a pixel takes once a streaming decoder has expanded it (a palette to RGB(A), 16-bit kept)."""
    bands = {"1": 1, "L": 1, "LA": 2, "P": 4, "PA": 4, "RGB": 3, "RGBA": 4, "CMYK": 4}.get(opened.mode, 4)
    return bands * (2 if opened.mode in WIDE or opened.info.get("bits") == 16 else 1)


def _webp_chunks(data: bytes) -> set[bytes]:
    """The four-letter chunk names of a WebP file's RIFF container (read from the header, not decoded)."""
    names: set[bytes] = set()
    position = 12
    while position + 8 <= len(data) and len(names) < 64:
        name, size = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], "little")
        names.add(name)
        position += 8 + size + (size & 1)
    return names


def _bytes_of(file) -> bytes:
    return file.getvalue() if isinstance(file, io.BytesIO) else Path(file).read_bytes()


def decode_reduced(opened: Image.Image, file) -> Image.Image:
    """`opened` (just opened by Pillow from `file`) decoded and, when over twice WORKING_SIDE, reduced by a whole
    factor, upright (EXIF orientation applied), in an 8-bit mode Pillow can read (see the module)."""
    width, height = opened.size
    factor = max(width, height) // WORKING_SIDE
    if opened.format in ("JPEG", "MPO"):
        opened.draft("L", draft_size(width, height))  # the decoder itself scales by 1/2, 1/4 or 1/8
    if factor >= 2 and opened.format in STREAMED:
        picture = _streamed(file, opened.format, factor)
    elif factor >= 2 and opened.format == "HEIF" and heif.available():
        picture = heif.tiled_heif(_bytes_of(file), factor)  # libheif turns it upright itself
        return picture
    else:
        opened.load()
        picture = reduce_any(opened, max(opened.size) // WORKING_SIDE)
    method = TRANSPOSE.get(_orientation(opened))
    return picture.transpose(method) if method is not None else picture


def _orientation(opened: Image.Image) -> int:
    """The EXIF orientation (1: upright) from what Pillow read of the header. (Pillow's getexif() would decode a
    whole PNG to look for an EXIF chunk after the pixels; one there is not seen here.)"""
    if opened.format == "TIFF":
        return int(opened.tag_v2.get(0x0112, 1))  # type: ignore[attr-defined]  # TiffImageFile's tags
    exif = Image.Exif()
    if opened.info.get("exif"):
        exif.load(opened.info["exif"])
    return int(exif.get(0x0112, 1))  # 0x0112: Orientation


def draft_size(width: int, height: int) -> tuple[int, int]:
    """The size to ask JPEG's draft mode for: the smallest 1/2^k reduction still at least WORKING_SIDE long.
    (Pillow picks the reduction from the tighter axis, so the request keeps the picture's aspect.)"""
    factor = max(1, max(width, height) / WORKING_SIDE)
    return max(1, int(width / factor)), max(1, int(height / factor))


def _streamed(file, kind: str, factor: int) -> Image.Image:
    """A PNG, TIFF or WebP read by libvips a band of rows at a time and box-averaged by `factor` as it streams."""
    options: dict[str, object] = {"access": "sequential", "fail_on": "error"}
    if kind == "WEBP":
        options["scale"] = 1 / factor  # libwebp decodes scaled (a lossy picture a macroblock row at a time)
    try:
        if isinstance(file, io.BytesIO):
            source = pyvips.Image.new_from_buffer(file.getvalue(), "", **options)
        else:
            source = pyvips.Image.new_from_file(str(file), **options)
        reduced = source if kind == "WEBP" else source.shrink(factor, factor)
        pixels = reduced.numpy()
        cmyk = reduced.interpretation == "cmyk"
    except pyvips.Error as error:
        raise OSError(str(error)) from None
    return _from_pixels(pixels, cmyk)


def _from_pixels(pixels: np.ndarray, cmyk: bool = False) -> Image.Image:
    """A small (H, W) or (H, W, bands) array of any type as an 8-bit PIL image: L, LA, RGB, RGBA or CMYK."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    bands = pixels.shape[-1]
    if pixels.dtype != np.uint8:
        pixels = np.rint(gray_levels(pixels)).astype(np.uint8)
    if cmyk and bands >= 4:
        return Image.fromarray(np.ascontiguousarray(pixels[..., :4]), "CMYK")
    if bands > 4:
        pixels = pixels[..., :4]
    picture = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if bands == 1 else pixels))
    return picture


def gray_levels(array: np.ndarray) -> np.ndarray:
    """Pixels of any type as float32 levels in [0, 255]: booleans as 0/255, integers by their range (8 bits when
    nothing exceeds 255, 16 when nothing exceeds 65535), floats in [0, 1] (or [0, 255] when larger occur)."""
    if array.dtype == bool:
        return array.astype(np.float32) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = 255 if array.max() <= 255 else 65535 if array.max() <= 65535 else float(array.max())
        return np.clip(array.astype(np.float32), 0, None) * (255 / top)
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageError(f"unsupported pixel type {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ImageError("image holds NaN or infinite pixels")
    return np.clip(array * 255 if array.max() <= 1 else array, 0, 255)


def reduce_any(picture: Image.Image, factor: int) -> Image.Image:
    """`picture` box-averaged by a whole `factor` (as Pillow's reduce), in any mode, a band of rows at a time:
    each band is converted to 8 bits per band (L, LA, RGB or RGBA) and reduced before the next, so no copy of the
    whole picture is made. Returns the picture itself when `factor` < 2."""
    if factor < 2:
        return picture
    width, height = picture.size
    scale = _wide_scale(picture)
    rows = STRIP_BLOCKS * factor
    pieces = [
        _reduced_band(picture.crop((0, top, width, min(top + rows, height))), factor, scale)
        for top in range(0, height, rows)
    ]
    out = Image.new(pieces[0].mode, (pieces[0].size[0], sum(piece.size[1] for piece in pieces)))
    top = 0
    for piece in pieces:
        out.paste(piece, (0, top))
        top += piece.size[1]
    out.info = dict(picture.info)
    return out


def _wide_scale(picture: Image.Image) -> float | None:
    """For 16- and 32-bit gray: what one level is in 8-bit levels, from the whole picture's range (as gray_levels)."""
    if picture.mode not in WIDE:
        return None
    low, high = picture.getextrema()  # one band: (lowest, highest)
    assert isinstance(low, (int, float)) and isinstance(high, (int, float))
    if picture.mode == "F":
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ImageError("image holds NaN or infinite pixels")
        return 255.0 if high <= 1 else 1.0
    return 255 / (255 if high <= 255 else 65535 if high <= 65535 else float(high))


def _reduced_band(band: Image.Image, factor: int, scale: float | None) -> Image.Image:
    if scale is not None:
        levels = np.clip(np.asarray(band, np.float32) * scale, 0, 255)
        band = Image.fromarray(np.rint(levels).astype(np.uint8))
    elif band.mode == "P":
        band = band.convert("LA" if "transparency" in band.info else "L")
    elif band.mode not in ("L", "LA", "RGB", "RGBA"):
        band = band.convert(TO_8_BITS.get(band.mode, "RGB"))
    return band.reduce(factor)
