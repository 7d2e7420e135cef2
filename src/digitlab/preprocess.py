"""From a real picture of a digit to the 28×28 image a model expects, the way MNIST was made.

MNIST digits are white ink on black, fitted into a 20×20 box (aspect ratio kept) and pasted into
a 28×28 field so that their centre of mass sits at pixel (14, 14). Photos and scans are dark ink
on light paper, off-centre and of any size. `preprocess_image` bridges the two: grayscale, find
the background from the border and turn the ink bright, subtract the background and its noise,
crop to the ink, resize the longer side to 20 px, and centre by centre of mass. `load_image`
reads a file with guards against non-images, truncated files and decompression bombs;
`decode_image` applies the same guards to bytes in memory (an upload).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

FIELD, BOX = 28, 20  # output side, and the side the digit's longer dimension is fitted into
CENTRE = 14.0  # where MNIST puts the centre of mass (row and column index; measured mean 14.0 ± 0.3)
MAX_PIXELS = 4096 * 4096  # decompression-bomb guard, checked on the declared size before decoding
MAX_FILE_BYTES = 64 * 1024 * 1024
WORKING_SIDE = 1024  # larger images are box-averaged down to about this before the analysis
MIN_CONTRAST = 24.0  # gray levels (of 255) between background and ink below which an image is blank
NOISE_SIGMAS = 4.0  # background noise (robust std) multiples treated as noise, not ink
FAINT_INK = 0.05  # fraction of the ink's reach below which pixels count as background
BBOX_INK = 0.25  # the crop is the box of pixels above this fraction of the stroke level (see _crop_to_ink)
FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM")  # openers Image.open may try (phone JPEGs: MPO)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".gif", ".tif", ".tiff",
                            ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})


def preprocess_image(image) -> torch.Tensor:
    """A digit picture -> uint8 tensor (1, 28, 28), white ink on black, MNIST-style.

    `image` is a PIL image or an array (numpy or torch) of shape (H, W), (H, W, C) or (C, H, W)
    with C in 1..4 (gray, gray+alpha, RGB, RGBA); uint8 / uint16 / bool pixels, or floats in [0, 1]
    (or [0, 255] when larger values occur). Either polarity works: the background is the border's
    median and the ink is whichever side of it reaches further. Transparent pixels show the
    background. Raises ImageError when no ink stands out from the background noise (blank).
    """
    gray = _composite(*(_pil_channels(image) if isinstance(image, Image.Image) else _array_channels(image)))
    gray = _shrink(gray, WORKING_SIDE)
    ink = _ink_map(gray)
    return torch.from_numpy(np.rint(_fit_and_centre(_crop_to_ink(ink, BBOX_INK)) * 255).astype(np.uint8)).unsqueeze(0)


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES) -> Image.Image:
    """Read an image file fully into memory (first frame, EXIF rotation applied), with guards.

    Refuses, as an ImageError naming the file: a missing, empty or larger-than-`max_bytes` file,
    anything Pillow cannot identify as one of FORMATS, an image whose declared size exceeds
    `max_pixels` (checked before decoding, so a decompression bomb never inflates), and a
    truncated or corrupt file. Pillow's global settings are left untouched.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("no such file", str(path)) from None
    except OSError as error:
        raise ImageError(f"cannot read ({error.strerror})", str(path)) from None
    if not path.is_file():
        raise ImageError("not a regular file", str(path))
    if size == 0:
        raise ImageError("empty file", str(path))
    if size > max_bytes:
        raise ImageError(f"file is {size:,} bytes, more than the {max_bytes:,} allowed", str(path))
    return _decode(path, str(path), max_pixels)


def decode_image(data: bytes, source: str = "upload", max_pixels: int = MAX_PIXELS,
                 max_bytes: int = MAX_FILE_BYTES, max_side: int | None = None) -> Image.Image:
    """load_image for bytes in memory (an upload): the same guards, errors naming `source`.

    `max_side`, when given, also refuses an image wider or taller than that, before decoding.
    """
    if not data:
        raise ImageError("empty file", source)
    if len(data) > max_bytes:
        raise ImageError(f"file is {len(data):,} bytes, more than the {max_bytes:,} allowed", source)
    return _decode(io.BytesIO(data), source, max_pixels, max_side)


def _decode(file, source: str, max_pixels: int, max_side: int | None = None) -> Image.Image:
    """Open, check the declared size, then decode (see load_image); `file` is a path or a binary file object."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file, formats=FORMATS) as opened:
                width, height = opened.size
                if max_side is not None and max(width, height) > max_side:
                    raise ImageError(f"image is {width}×{height} pixels, larger than the "
                                     f"{max_side}×{max_side} allowed", source)
                if width * height > max_pixels:
                    raise ImageError(f"image is {width}×{height} pixels, more than the {max_pixels:,} allowed "
                                     "(decompression-bomb guard)", source)
                if opened.format in ("JPEG", "MPO"):
                    opened.draft("L", (WORKING_SIDE, WORKING_SIDE))  # let the decoder downscale big photos
                opened.load()
                return ImageOps.exif_transpose(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image is too large to decode safely (decompression-bomb guard)", source) from None
    except UnidentifiedImageError:
        raise ImageError("not an image file digitlab can read (PNG, JPEG, BMP, GIF, TIFF, WebP or PNM)",
                         source) from None
    except ImageError:
        raise
    except Exception as error:  # noqa: BLE001 - image decoders raise many types on malformed files
        raise ImageError(f"truncated or corrupt image ({error})", source) from None


def preprocess_file(path: str | Path) -> torch.Tensor:
    """load_image + preprocess_image; every problem is an ImageError naming the file."""
    image = load_image(path)
    try:
        return preprocess_image(image)
    except ImageError as error:
        raise ImageError(error.problem, str(path)) from None


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside `folder` (by suffix, hidden files skipped), sorted by name."""
    return sorted(child for child in Path(folder).iterdir()
                  if child.is_file() and not child.name.startswith(".") and child.suffix.lower() in IMAGE_SUFFIXES)


def _pil_channels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Gray levels (H, W) float32 in [0, 255] and alpha in [0, 1] (or None) of a PIL image."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _array_channels(np.asarray(image))
    has_alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
    try:
        if has_alpha:
            pixels = np.asarray(image.convert("LA"), dtype=np.float32)
            return pixels[..., 0], pixels[..., 1] / 255
        return np.asarray(image.convert("L"), dtype=np.float32), None
    except (ValueError, OSError) as error:
        raise ImageError(f"cannot convert {image.mode} pixels to grayscale ({error})") from None


def _array_channels(array) -> tuple[np.ndarray, np.ndarray | None]:
    """Gray levels (H, W) float32 in [0, 255] and alpha in [0, 1] (or None) of an array."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 2, 3, 4) and array.shape[-1] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first -> last
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4) or min(array.shape[:2]) < 1:
        raise ImageError(f"expected an image array of shape (H, W), (H, W, C) or (C, H, W), got {array.shape}")
    pixels = _to_gray_levels(array)
    colour = pixels[..., :3] if pixels.shape[-1] >= 3 else pixels[..., :1]
    gray = colour[..., 0] if colour.shape[-1] == 1 else colour @ np.array([0.299, 0.587, 0.114], np.float32)
    alpha = pixels[..., -1] / 255 if pixels.shape[-1] in (2, 4) else None
    return gray.astype(np.float32), alpha


def _to_gray_levels(array: np.ndarray) -> np.ndarray:
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


def _composite(gray: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Flatten transparency onto a backdrop that contrasts with the visible ink (white behind dark ink)."""
    if alpha is None or alpha.min() >= 1:
        return gray
    if alpha.max() <= 0:
        raise ImageError("no ink found: the image is fully transparent")
    backdrop = 255.0 if (gray * alpha).sum() / alpha.sum() < 128 else 0.0
    return gray * alpha + backdrop * (1 - alpha)


def _shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """Box-average an image whose longer side exceeds `side` down to about `side` (speed; also averages noise)."""
    height, width = gray.shape
    factor = max(height, width) / side
    if factor <= 1:
        return gray
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX))


def _box3(values: np.ndarray, pad: str = "edge") -> np.ndarray:
    """3×3 mean filter (edges padded by `pad`, a numpy.pad mode): cheap smoothing that tames single-pixel noise."""
    padded = np.pad(values, 1, mode=pad)  # type: ignore[call-overload]  # numpy's stubs list the modes as literals
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / 9


def _ink_map(gray: np.ndarray) -> np.ndarray:
    """Ink intensity in [0, 1] (H, W), background exactly 0; ImageError if nothing stands out.

    The background level and its noise come from the outer frame (median and MAD); the ink is on
    the side of the background that the smoothed image reaches further. A pixel is ink when it
    exceeds NOISE_SIGMAS noise deviations (and FAINT_INK of the ink's reach) and so does the mean
    of its 3×3 neighbourhood at a third of that: a lone noise spike, or a pair, fails the second.
    Half the noise floor is subtracted and the strokes' 90th percentile becomes 1.
    """
    background, noise = _background(gray)
    smooth = _box3(gray)
    ink = background - gray if background - smooth.min() > smooth.max() - background else gray - background
    smooth_ink = _box3(ink)
    reach = float(smooth_ink.max())
    if reach < max(MIN_CONTRAST, 1.5 * NOISE_SIGMAS * noise):
        raise ImageError("no ink found (blank image)")
    floor = max(NOISE_SIGMAS * noise, FAINT_INK * reach)
    mask = (ink > floor) & (smooth_ink > floor / 3)
    mask &= _box3(mask.astype(np.float32), pad="constant") * 9 - mask > 0.5  # drop pixels with no ink neighbour
    if not mask.any():
        raise ImageError("no ink found (blank image)")
    offset = floor / 2
    level = float(np.percentile(ink[mask], 90))
    return np.where(mask, np.clip((ink - offset) / max(level - offset, 1e-6), 0, 1), 0).astype(np.float32)


def _background(gray: np.ndarray) -> tuple[float, float]:
    """Median and robust standard deviation (1.4826 × MAD) of the outer 5% frame of the image."""
    frame = max(1, min(gray.shape) // 20)
    border = np.concatenate([gray[:frame].ravel(), gray[-frame:].ravel(),
                             gray[:, :frame].ravel(), gray[:, -frame:].ravel()])
    background = float(np.median(border))
    return background, 1.4826 * float(np.median(np.abs(border - background)))


def _crop_to_ink(ink: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Crop to the bounding box of the pixels above `threshold`.

    Upscaled scans spread every edge by a blurred fringe of faint ink; boxing only the firmer ink
    keeps the digit's size what MNIST's 20-px box means (its digits keep that box at 64/255).
    """
    strong = ink > threshold
    rows, cols = np.flatnonzero(strong.any(1)), np.flatnonzero(strong.any(0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fit_and_centre(ink: np.ndarray) -> np.ndarray:
    """Resize so the longer side is BOX (aspect kept), then paste into FIELD² with the centre of mass at CENTRE."""
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    box = np.clip(np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS)), 0, 1)
    mass = box.sum()
    if mass <= 0:
        raise ImageError("no ink found (blank image)")
    centre_row = (box.sum(1) * np.arange(box.shape[0])).sum() / mass
    centre_col = (box.sum(0) * np.arange(box.shape[1])).sum() / mass
    top, left = round(CENTRE - centre_row), round(CENTRE - centre_col)
    field = np.zeros((FIELD, FIELD), np.float32)
    rows = slice(max(top, 0), min(top + box.shape[0], FIELD))
    cols = slice(max(left, 0), min(left + box.shape[1], FIELD))
    field[rows, cols] = box[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
    return field
