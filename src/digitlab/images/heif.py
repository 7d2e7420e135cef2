"""HEIC/HEIF pictures decoded one tile at a time through libheif's C API, so a 100-megapixel photo never exists
at full size.

pillow_heif (the HEIC opener Pillow uses here) decodes the whole picture: YCbCr planes, then an RGB copy, then
Pillow's own copy, about 7 bytes per pixel (+730 MB for 100 megapixels, measured). Phones save HEIC as a grid of
small tiles (iPhones: 512×512), and libheif (from 1.20) decodes one tile on request, with the picture's rotation
and mirroring applied. `tiled_heif` calls that through ctypes on the libheif that pillow_heif ships, and box-
averages the tiles, a band of tile rows at a time, into the reduced picture: its memory is a band of tiles.
`tile_bytes` says what one tile's decoding holds at once (for a picture that is not a grid, the whole picture in
YCbCr and in RGB), so a server can refuse what it cannot afford before decoding. Where that libheif cannot be found
or lacks the tile API, `available()` is False and callers fall back to pillow_heif.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

HEIF_RGB, HEIF_INTERLEAVED_RGB, HEIF_INTERLEAVED_RGBA, HEIF_CHANNEL_INTERLEAVED = 1, 10, 11, 10  # libheif enums
BYTES_PER_TILE_PIXEL = 4.5  # YCbCr 4:2:0 (1.5 bytes) while decoding, then interleaved RGB (3 bytes)
STRIP_BLOCKS = 32  # output rows reduced at a time


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("subcode", ctypes.c_int), ("message", ctypes.c_char_p)]


class _Tiling(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_int),
        ("num_columns", ctypes.c_uint32),
        ("num_rows", ctypes.c_uint32),
        ("tile_width", ctypes.c_uint32),
        ("tile_height", ctypes.c_uint32),
        ("image_width", ctypes.c_uint32),
        ("image_height", ctypes.c_uint32),
        ("top_offset", ctypes.c_uint32),
        ("left_offset", ctypes.c_uint32),
        ("number_of_extra_dimensions", ctypes.c_uint8),
        ("extra_dimensions", ctypes.c_uint32 * 8),
    ]


@dataclass(frozen=True)
class Tiling:
    """A picture's grid as displayed (rotation applied): columns × rows of tile_width × tile_height pixels."""

    width: int
    height: int
    columns: int
    rows: int
    tile_width: int
    tile_height: int

    @property
    def tile_bytes(self) -> int:
        """What decoding one tile holds at once (a picture that is not a grid is one tile)."""
        return round(self.tile_width * self.tile_height * BYTES_PER_TILE_PIXEL)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """pillow_heif's own libheif (already loaded by its extension), with the signatures used here; None without
    the tile API."""
    import pillow_heif

    folder = os.path.join(os.path.dirname(os.path.dirname(pillow_heif.__file__)), "pillow_heif.libs")
    found = sorted(glob.glob(os.path.join(folder, "libheif*")))
    try:
        lib = ctypes.CDLL(found[0] if found else "libheif.so.1")
        lib.heif_image_handle_decode_image_tile  # noqa: B018  (libheif 1.20 or later)
    except (OSError, AttributeError):
        return None
    pointer, handle_out = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    signatures = {
        "heif_context_alloc": (pointer, []),
        "heif_context_free": (None, [pointer]),
        "heif_context_read_from_memory_without_copy": (_Error, [pointer, ctypes.c_char_p, ctypes.c_size_t, pointer]),
        "heif_context_get_primary_image_handle": (_Error, [pointer, handle_out]),
        "heif_image_handle_release": (None, [pointer]),
        "heif_image_handle_has_alpha_channel": (ctypes.c_int, [pointer]),
        "heif_image_handle_get_image_tiling": (_Error, [pointer, ctypes.c_int, ctypes.POINTER(_Tiling)]),
        "heif_image_handle_decode_image_tile": (
            _Error,
            [pointer, handle_out, ctypes.c_int, ctypes.c_int, pointer, ctypes.c_uint32, ctypes.c_uint32],
        ),
        "heif_image_get_plane_readonly2": (pointer, [pointer, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]),
        "heif_image_get_width": (ctypes.c_int, [pointer, ctypes.c_int]),
        "heif_image_get_height": (ctypes.c_int, [pointer, ctypes.c_int]),
        "heif_image_release": (None, [pointer]),
    }
    try:
        for name, (result, arguments) in signatures.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = result, arguments
    except AttributeError:
        return None
    return lib


def available() -> bool:
    """Whether HEIC pictures can be decoded tile by tile here."""
    return _library() is not None


class _Picture:
    """One HEIF file's primary picture, open in libheif for the duration of a `with` block."""

    def __init__(self, data: bytes):
        lib = _library()
        assert lib is not None, "check available() first"
        self.lib, self.data = lib, data  # libheif reads `data` in place: it must outlive the context
        self.context = lib.heif_context_alloc()
        self.handle = ctypes.c_void_p()
        try:
            _check(lib.heif_context_read_from_memory_without_copy(self.context, data, len(data), None))
            _check(lib.heif_context_get_primary_image_handle(self.context, ctypes.byref(self.handle)))
            tiling = _Tiling(version=1)
            _check(lib.heif_image_handle_get_image_tiling(self.handle, 1, ctypes.byref(tiling)))
        except BaseException:
            self.close()
            raise
        self.alpha = bool(lib.heif_image_handle_has_alpha_channel(self.handle))
        self.tiling = Tiling(
            tiling.image_width,
            tiling.image_height,
            tiling.num_columns,
            tiling.num_rows,
            tiling.tile_width,
            tiling.tile_height,
        )

    def __enter__(self) -> _Picture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.handle:
            self.lib.heif_image_handle_release(self.handle)
            self.handle = ctypes.c_void_p()
        if self.context:
            self.lib.heif_context_free(self.context)
            self.context = None

    @contextlib.contextmanager
    def tile(self, column: int, row: int):
        """One tile as an (H, W, 3 or 4) uint8 RGB(A) view of libheif's own pixels, rotation and mirroring applied,
        for the duration of the block (libheif frees it after)."""
        image = ctypes.c_void_p()
        chroma = HEIF_INTERLEAVED_RGBA if self.alpha else HEIF_INTERLEAVED_RGB
        lib = self.lib
        _check(
            lib.heif_image_handle_decode_image_tile(
                self.handle, ctypes.byref(image), HEIF_RGB, chroma, None, column, row
            )
        )
        try:
            stride = ctypes.c_size_t()
            plane = lib.heif_image_get_plane_readonly2(image, HEIF_CHANNEL_INTERLEAVED, ctypes.byref(stride))
            width = lib.heif_image_get_width(image, HEIF_CHANNEL_INTERLEAVED)
            height = lib.heif_image_get_height(image, HEIF_CHANNEL_INTERLEAVED)
            if not plane or width <= 0 or height <= 0:
                raise OSError("libheif returned a tile without pixels")
            rows = np.ctypeslib.as_array(ctypes.cast(plane, ctypes.POINTER(ctypes.c_uint8)), (height, stride.value))
            channels = 4 if self.alpha else 3
            yield rows[:, : width * channels].reshape(height, width, channels)
        finally:
            lib.heif_image_release(image)


def _check(error: _Error) -> None:
    if error.code != 0:
        raise OSError((error.message or b"libheif error").decode("utf-8", "replace"))


def tiling(data: bytes) -> Tiling:
    """The displayed size and tile grid of a HEIF file's primary picture (reads the header only)."""
    with _Picture(data) as picture:
        return picture.tiling


def tiled_heif(data: bytes, factor: int) -> Image.Image:
    """The primary picture box-averaged by `factor`, decoded one band of tile rows at a time: an RGB or RGBA
    image of ceil(width / factor) × ceil(height / factor), as Pillow's reduce(factor) would give. A picture
    that is one tile is reduced from libheif's own pixels, a strip of rows at a time, without a copy."""
    with _Picture(data) as picture:
        grid = picture.tiling
        first = np.zeros((0, grid.width, 4 if picture.alpha else 3), np.uint8)
        out = Image.new("RGBA" if picture.alpha else "RGB", (-(-grid.width // factor), -(-grid.height // factor)))
        carried, top = first, 0  # rows left over from the band above (fewer than `factor`); where the next go
        for row in range(grid.rows):
            with contextlib.ExitStack() as tiles:
                views = [tiles.enter_context(picture.tile(column, row)) for column in range(grid.columns)]
                band = views[0] if len(views) == 1 else np.concatenate(views, axis=1)  # grid tiles are small
                band = band[: grid.height - top * factor - len(carried), : grid.width]  # tiles overhang the edges
                last = row == grid.rows - 1
                whole = len(carried) + len(band) if last else (len(carried) + len(band)) // factor * factor
                for start in range(0, whole, STRIP_BLOCKS * factor):  # a strip of rows at a time
                    rows = _rows(carried, band, start, min(start + STRIP_BLOCKS * factor, whole))
                    reduced = Image.fromarray(rows).reduce(factor)
                    out.paste(reduced, (0, top))
                    top += reduced.size[1]
                carried = _rows(carried, band, whole, len(carried) + len(band))
        return out


def _rows(carried: np.ndarray, band: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of `carried` followed by `band`, as one contiguous array (a copy of those rows only)."""
    if stop <= len(carried):
        return np.ascontiguousarray(carried[start:stop])
    if start >= len(carried):
        return np.ascontiguousarray(band[start - len(carried) : stop - len(carried)])
    return np.concatenate([carried[start:], band[: stop - len(carried)]])
