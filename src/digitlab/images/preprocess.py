"""From a real picture of a digit to the 28×28 image a model expects, the way MNIST was made.

MNIST digits are white ink on black, fitted into a 20×20 box (aspect ratio kept) and pasted into
a 28×28 field so that their centre of mass sits at pixel (14, 14). Photos and scans are dark ink
on light paper, off-centre and of any size. `preprocess_image` bridges the two: grayscale, find
the background from the border and turn the ink bright, subtract the background and its noise,
crop to the ink, resize the longer side to 20 px, and centre by centre of mass. `load_image`
reads a file with guards against non-images, truncated files and decompression bombs;
`decode_image` applies the same guards to bytes in memory (an upload). Big pictures are decoded
already reduced, a band of rows or a tile at a time (digitlab.images.decode), so a 100-megapixel photo
never exists at full size, let alone as a float array; `inspect_image` reads only the header and says
what decoding would cost, so a server can refuse before it decodes. The ink is found on a copy of about ANALYSIS_SIDE px
(a 12-megapixel photo costs what a small scan does); a digit that comes out small there is read
again from the picture's own pixels around it, so its thin strokes are not averaged away. A drawing
(white strokes on a pure black pad, recognised exactly) needs none of that: it takes the drawing path of
digitlab.images.drawing, batched tensor operations that the web export also carries (`prepare_drawings`).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from ..config import PreprocessOptions
from ..errors import ImageError, ImageTooLarge
from .decode import SCALE_KEY, WORKING_SIDE, DecodeCost, decode_cost, decode_reduced, gray_levels, reduce_any
from .drawing import BOX, CENTRE, FIELD, PEN_RANGE, PEN_TARGET, Drawings, drawing_pixels, stack_drawings
from .ink import NOISE_SIGMAS, Ink, digit_strokes, find_ink, towards_ink

MAX_PIXELS = (
    100_000_000  # decompression-bomb guard, checked on the declared size before decoding (a 108-MP phone: 12000×9000)
)
MAX_FILE_BYTES = 64 * 1024 * 1024
ANALYSIS_SIDE = 512  # a single digit's ink is first found on a copy box-averaged to about this (speed) ...
DETAIL_SIDE = 64  # ... and looked at again in the picture's own pixels when its box came out smaller than this
TINY_SIDE = 64  # px: a picture no larger than this in which no ink stands out is looked at again ENLARGE× larger
ENLARGE = 4
ZOOM = 160  # the digit's longer side while its strokes are redrawn: 8 px per output pixel
# digitlab 0.1's pipeline (PreprocessOptions(legacy=True)), kept for models saved before the options existed
LEGACY_MIN_CONTRAST = 24.0  # gray levels (of 255) between background and ink below which an image is blank
FAINT_INK = 0.05  # fraction of the ink's reach below which pixels count as background
BBOX_INK = 0.25  # the crop is the box of pixels above this fraction of the stroke level
FORMATS = (
    "PNG",
    "JPEG",
    "BMP",
    "DIB",
    "GIF",
    "TIFF",
    "WEBP",
    "PPM",
    "HEIF",
)  # openers Image.open may try (phone JPEGs: MPO)
IMAGE_SUFFIXES = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".bmp",
        ".dib",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".heic",
        ".heif",
        ".hif",
    }
)
READABLE = "PNG, JPEG, HEIC, WebP, BMP, GIF, TIFF or PNM"

DRAWINGS = Drawings()
pillow_heif.register_heif_opener()  # iPhones save HEIC by default
# Pillow warns from 89 megapixels on; the guard here (max_pixels, judged from the header) decides instead.
# Pillow's own error, at twice that, still stands and is caught in _decode.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass
class Preprocessed:
    """What the model sees, uint8 (1, 28, 28) white ink on black, and where it was found in the picture:
    `box` is (x0, y0, x1, y1) in the picture's own pixels (x1, y1 exclusive); `neighbours`: how many other
    digit-sized pieces of ink stand beside it on its line (ink.digit_strokes), so the picture is not one digit."""

    image: torch.Tensor
    box: tuple[int, ...]
    neighbours: int = 0


def prepare(image, options: PreprocessOptions = PreprocessOptions()) -> Preprocessed:
    """A digit picture -> the MNIST-style 28×28 image and the box of the ink it came from.

    `image` is a PIL image or an array (numpy or torch) of shape (H, W), (H, W, C) or (C, H, W)
    with C in 1..4 (gray, gray+alpha, RGB, RGBA); uint8 / uint16 / bool pixels, or floats in [0, 1]
    (or [0, 255] when larger values occur). Either polarity works. Transparent pixels show the
    background. Raises ImageError when no ink stands out from the paper (blank).
    """
    drawing = as_drawing(image, options)
    if drawing is not None:
        (prepared,) = prepare_drawings([drawing], options)
        if prepared is None:
            raise ImageError("no ink found (blank image)")
        return prepared
    if options.legacy:
        gray, scale = working_gray(image)
        crop, ink_box = _legacy_crop(gray)
        return finish(_centre(_fit(crop, Image.Resampling.LANCZOS)), ink_box, scale, options)
    gray, scale = working_gray(image, ANALYSIS_SIDE)
    if _already_mnist(gray):
        field = towards_ink(gray) / 255
        rows, cols = np.flatnonzero(field.any(1)), np.flatnonzero(field.any(0))
        return finish(field, (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1), scale, options)
    field, box, neighbours = _digit(gray, options)
    if max(box[2] - box[0], box[3] - box[1]) < DETAIL_SIDE and _finer(image, gray, scale):
        field, box = _closer_look(image, gray.shape, box, options) or (field, box)
    return finish(field, box, scale, options, neighbours)


@dataclass
class Drawing:
    """A picture that takes the drawing path: its gray levels (H, W) uint8 and its pixels per gray pixel (for
    boxes in the picture's own coordinates, as decoding may have reduced it)."""

    pixels: np.ndarray
    scale: float = 1.0


def as_drawing(image, options: PreprocessOptions = PreprocessOptions()) -> Drawing | None:
    """`image` as a Drawing when it takes the drawing path (digitlab.images.drawing), else None. A drawing has no
    paper to flatten and no specks to clean, so only legacy and no-stroke keep it on the full pipeline; an
    MNIST-sized picture stays there too (it may already be MNIST's layout, which is left as it is)."""
    if options.legacy or not options.stroke or not isinstance(image, Image.Image) or image.size == (FIELD, FIELD):
        return None
    pixels = drawing_pixels(image)
    return None if pixels is None else Drawing(pixels, float(image.info.get(SCALE_KEY, 1.0)))


def prepare_drawings(
    drawings: list[Drawing], options: PreprocessOptions = PreprocessOptions()
) -> list[Preprocessed | None]:
    """Drawings prepared together, one batch of tensor operations (a server's micro-batch); None for a blank one."""
    with torch.no_grad():
        digits, boxes = DRAWINGS(stack_drawings([drawing.pixels for drawing in drawings]))
    return [
        finish(digit[0].numpy() / 255, box.tolist(), drawing.scale, options) if digit.amax() > 0 else None
        for digit, box, drawing in zip(digits, boxes, drawings, strict=True)
    ]


def _digit(gray: np.ndarray, options: PreprocessOptions) -> tuple[np.ndarray, tuple[float, ...], int]:
    """The 28×28 field of the digit in a working picture, its box there (see digit_field), and how many
    digit-sized pieces stand beside it (ink.digit_strokes)."""
    ink, enlarged = _tiny_or_not(gray, options)
    keep, neighbours = digit_strokes(ink, clean=options.clean)
    field, box = digit_field(ink, keep, options)
    return field, tuple(value / enlarged for value in box), neighbours


def _tiny_or_not(gray: np.ndarray, options: PreprocessOptions) -> tuple[Ink, int]:
    """The ink of `gray`, and how many times `gray` was enlarged to find it (1 or ENLARGE). In a tiny crop a
    faint stroke is a pixel or two wide, and the 3×3 smoothing that tells strokes from pixel noise averages
    it into the paper; enlarged first, the stroke spans the smoothing window and keeps its contrast."""
    try:
        return find_ink(gray, flatten=options.flatten), 1
    except ImageError:
        if max(gray.shape) > TINY_SIDE:
            raise
    height, width = gray.shape
    larger = Image.fromarray(gray).resize((width * ENLARGE, height * ENLARGE), Image.Resampling.BILINEAR)
    return find_ink(np.asarray(larger), flatten=False), ENLARGE


def _finer(image, gray: np.ndarray, scale: float) -> bool:
    """Whether `image` holds more pixels than its analysis copy `gray` (`scale` picture pixels per pixel of it)."""
    return image.size[1] > gray.shape[0] if isinstance(image, Image.Image) else scale > 1


def _closer_look(image, shape: tuple[int, ...], box: tuple[float, ...], options: PreprocessOptions):
    """A digit that came out small in the analysis copy (of `shape`), read again from the picture's own pixels
    in a window around its `box`: thin strokes are no longer averaged into the paper. Returns the field and
    the box (in analysis pixels), or None when the window shows no digit."""
    x0, y0, x1, y1 = box
    margin = max(x1 - x0, y1 - y0)
    window = (max(0, x0 - margin), max(0, y0 - margin), min(shape[1], x1 + margin), min(shape[0], y1 + margin))
    picture = image if isinstance(image, Image.Image) else Image.fromarray(_composite(*_array_channels(image)))
    ratio = picture.size[1] / shape[0]  # picture pixels per analysis pixel
    left, top, right, bottom = (round(value * ratio) for value in window)
    region = picture.crop((left, top, right, bottom))
    try:
        gray, _ = working_gray(region, ANALYSIS_SIDE)
        field, (u0, v0, u1, v1), _ = _digit(gray, options)
    except ImageError:
        return None
    step = region.size[1] / gray.shape[0] / ratio  # analysis pixels per pixel of the window's working copy
    return field, (window[0] + u0 * step, window[1] + v0 * step, window[0] + u1 * step, window[1] + v1 * step)


def working_gray(image, side: int = WORKING_SIDE) -> tuple[np.ndarray, float]:
    """The picture as gray levels (H, W) float32 in [0, 255], transparency flattened and shrunk to at most
    `side`; and the picture's pixels per working pixel (for boxes in the picture's own coordinates)."""
    if isinstance(image, Image.Image):
        scale, height = float(image.info.get(SCALE_KEY, 1.0)), image.size[1]
        image = reduce_any(image, max(image.size) // side)  # box-average the bytes (any mode) before any float copy
        gray = _composite(*_pil_channels(image))
    else:
        gray, scale = _composite(*_array_channels(image)), 1.0
        height = gray.shape[0]
    gray = _shrink(gray, side)
    return gray, scale * height / gray.shape[0]


def digit_field(ink: Ink, keep: np.ndarray, options: PreprocessOptions) -> tuple[np.ndarray, tuple[int, ...]]:
    """The 28×28 float field (ink in [0, 1], centred by mass) of the pieces `keep` marks, and their box
    (x0, y0, x1, y1) in working pixels. Used for a single digit and for each digit of a number."""
    crop, box = _digit_crop(ink, keep)
    if options.stroke:
        return _centre(_redraw(crop)), box
    return _centre(_fit(crop / _stroke_level(crop), Image.Resampling.LANCZOS)), box


def finish(
    field: np.ndarray, box: tuple[float, ...], scale: float, options: PreprocessOptions, neighbours: int = 0
) -> Preprocessed:
    """Deskew the field if asked, quantise it to uint8 (1, 28, 28), and scale the box to the picture's pixels."""
    if options.deskew:
        field = deskew(torch.from_numpy(np.ascontiguousarray(field, np.float32))[None, None])[0, 0].numpy()
    pixels = torch.from_numpy(np.rint(np.clip(field, 0, 1) * 255).astype(np.uint8)).unsqueeze(0)
    return Preprocessed(pixels, tuple(round(value * scale) for value in box), neighbours)


def preprocess_image(image, options: PreprocessOptions = PreprocessOptions()) -> torch.Tensor:
    """A digit picture -> uint8 tensor (1, 28, 28), white ink on black, MNIST-style (see `prepare`)."""
    return prepare(image, options).image


def load_image(
    path: str | Path, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES, max_decode_bytes: int | None = None
) -> Image.Image:
    """Read an image file fully into memory (first frame, EXIF rotation applied), with guards.

    Refuses, as an ImageError naming the file: a missing, empty or larger-than-`max_bytes` file,
    anything Pillow cannot identify as one of FORMATS, an image whose declared size exceeds
    `max_pixels` (checked before decoding, so a decompression bomb never inflates), one whose decoding
    would hold more than `max_decode_bytes` at once (see digitlab.images.decode; None: no such limit), and a
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
        raise ImageTooLarge(f"file is {size:,} bytes, more than the {max_bytes:,} allowed", str(path))
    return _decode(path, str(path), max_pixels, max_decode_bytes)


def decode_image(
    data: bytes,
    source: str = "upload",
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
    max_decode_bytes: int | None = None,
) -> Image.Image:
    """load_image for bytes in memory (an upload): the same guards, errors naming `source`.

    Size limits are refused with ImageTooLarge (an ImageError), so a server can answer 413.
    """
    _check_bytes(data, source, max_bytes)
    return _decode(io.BytesIO(data), source, max_pixels, max_decode_bytes)


def inspect_image(
    data: bytes,
    source: str = "upload",
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
    max_decode_bytes: int | None = None,
) -> DecodeCost:
    """decode_image's guards from the header alone, without decoding a pixel: what decoding `data` would hold in
    memory at once. Also checks a PNG's chunks (their CRCs, not their pixels), so a cut-off PNG is refused here.
    A server runs this before an image waits for its turn to be decoded."""
    _check_bytes(data, source, max_bytes)
    with _guarded(source, max_pixels) as guard, Image.open(io.BytesIO(data), formats=FORMATS) as opened:
        cost = guard.check(opened, io.BytesIO(data), max_decode_bytes)
        opened.verify()
        return cost


def _check_bytes(data: bytes, source: str, max_bytes: int) -> None:
    if not data:
        raise ImageError("empty file", source)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"file is {len(data):,} bytes, more than the {max_bytes:,} allowed", source)


@dataclass(frozen=True)
class EncodedPicture:
    """An image file's bytes held in memory under the name they are known by (its path, an object store's key):
    what a batch engine hands over after reading the files, read by `read_picture` with `decode_image`'s guards."""

    name: str
    data: bytes


def read_picture(item):
    """The picture an input stands for: a path read by `load_image`, an EncodedPicture decoded by `decode_image`
    (errors naming it), a PIL image or an array as it is."""
    if isinstance(item, EncodedPicture):
        return decode_image(item.data, item.name)
    if isinstance(item, Path):
        return load_image(item)
    return item


def megapixels(pixels: int) -> str:
    """`pixels` as a person reads a photo's size: '48 megapixels', '0.5 megapixels'."""
    return f"{pixels / 1e6:.3g} megapixels"


def _decode(file, source: str, max_pixels: int, max_decode_bytes: int | None = None) -> Image.Image:
    """Open, check the declared size and the decoding cost, then decode reduced (see load_image); `file` is a path
    or a binary file."""
    with _guarded(source, max_pixels) as guard, Image.open(file, formats=FORMATS) as opened:
        guard.check(opened, file, max_decode_bytes)
        width, height = opened.size
        picture = decode_reduced(opened, file)
        picture.info[SCALE_KEY] = max(width, height) / max(picture.size)  # the same whichever way it is turned
        return picture


class _guarded:
    """Turns what Pillow and the decoders raise into one-line ImageErrors naming `source`, and checks an opened
    picture's declared size (`max_pixels`) and decoding cost (`max_decode_bytes`) before it is decoded."""

    def __init__(self, source: str, max_pixels: int):
        self.source, self.max_pixels = source, max_pixels

    def check(self, opened: Image.Image, file, max_decode_bytes: int | None) -> DecodeCost:
        width, height = opened.size
        if width * height > self.max_pixels:
            raise ImageTooLarge(
                f"image is {width}×{height} pixels ({megapixels(width * height)}), more than "
                f"the {megapixels(self.max_pixels)} allowed (decompression-bomb guard)",
                self.source,
            )
        cost = decode_cost(opened, file)
        if max_decode_bytes is not None and cost.bytes > max_decode_bytes:
            raise ImageTooLarge(
                f"image is {width}×{height} pixels, a {cost.why}: decoding it would hold about "
                f"{cost.bytes / 1e6:,.0f} MB, more than the {max_decode_bytes / 1e6:,.0f} MB allowed",
                self.source,
            )
        return cost

    def __enter__(self) -> _guarded:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None or isinstance(error, ImageError):
            return
        if isinstance(error, Image.DecompressionBombError):
            limit = min(self.max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or self.max_pixels))
            raise ImageTooLarge(
                f"image is more than the {megapixels(limit)} allowed (decompression-bomb guard)", self.source
            ) from None
        if isinstance(error, UnidentifiedImageError):
            raise ImageError(f"not an image file digitlab can read ({READABLE})", self.source) from None
        if isinstance(error, Exception):
            detail = " ".join(str(error).split())  # one line: some decoders (libheif, libvips) answer in several
            raise ImageError(f"truncated or corrupt image ({detail})", self.source) from None


def preprocess_file(path: str | Path, options: PreprocessOptions = PreprocessOptions()) -> torch.Tensor:
    """load_image + preprocess_image; every problem is an ImageError naming the file."""
    image = load_image(path)
    try:
        return preprocess_image(image, options)
    except ImageError as error:
        raise ImageError(error.problem, str(path)) from None


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside `folder` (by suffix, hidden files skipped), sorted by name."""
    return sorted(
        child
        for child in Path(folder).iterdir()
        if child.is_file() and not child.name.startswith(".") and child.suffix.lower() in IMAGE_SUFFIXES
    )


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
    pixels = gray_levels(array)
    colour = pixels[..., :3] if pixels.shape[-1] >= 3 else pixels[..., :1]
    gray = colour[..., 0] if colour.shape[-1] == 1 else colour @ np.array([0.299, 0.587, 0.114], np.float32)
    alpha = pixels[..., -1] / 255 if pixels.shape[-1] in (2, 4) else None
    return gray.astype(np.float32), alpha


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


def _already_mnist(gray: np.ndarray) -> bool:
    """Whether a picture already is an MNIST-style digit (28×28, ink on pure black, centred by mass):
    such a picture (what --save-preprocessed writes) is left as it is, so preprocessing is idempotent."""
    if gray.shape != (FIELD, FIELD):
        return False
    gray = towards_ink(gray)
    if gray.min() > 0 or np.median(gray) > 0 or gray.max() < 128:
        return False
    mass = gray.sum()
    index = np.arange(FIELD)
    centre = ((gray.sum(1) * index).sum() / mass, (gray.sum(0) * index).sum() / mass)
    return all(abs(value - CENTRE) <= 1 for value in centre)


def _digit_crop(ink: Ink, keep: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The ink of the kept pieces (with their soft edges), cropped to their box; and the box (x0, y0, x1, y1)."""
    rows, cols = np.flatnonzero(keep.any(1)), np.flatnonzero(keep.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    near = ndimage.binary_dilation(keep[top:bottom, left:right], np.ones((3, 3)))
    return np.where(near, ink.values[top:bottom, left:right], 0).astype(np.float32), (left, top, right, bottom)


def _stroke_level(crop: np.ndarray) -> float:
    """The gray level of the strokes' core: the 90th percentile of the inked pixels."""
    inked = crop[crop > 0]
    return max(float(np.percentile(inked, 90)), 1e-6) if inked.size else 1.0


def _redraw(crop: np.ndarray) -> np.ndarray:
    """The strokes at full intensity, fitted into BOX²; a pen thinner or heavier than MNIST's is redrawn.

    The strokes are cut at half their level at ZOOM px per digit and their width is measured
    there. Within PEN_RANGE the soft strokes are kept (scaled so their core is white); outside it
    the cut strokes are thickened or thinned to PEN_TARGET and area-averaged down to BOX, which
    gives the soft edges MNIST's anti-aliasing gave its digits.
    """
    level = _stroke_level(crop)
    height, width = crop.shape
    factor = ZOOM / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resample = Image.Resampling.BICUBIC if factor > 1 else Image.Resampling.BOX
    binary = np.asarray(Image.fromarray(crop).resize(size, resample)) > 0.5 * level
    if not binary.any():
        raise ImageError("no ink found (blank image)")
    binary = _crop_to_ink(binary)
    per_pixel = max(binary.shape) / BOX  # zoomed pixels per output pixel
    binary = np.pad(binary, 1)  # paper all round, so distances are measured to the strokes' edges
    inside = ndimage.distance_transform_edt(binary)
    ridge = binary & (inside >= ndimage.maximum_filter(inside, 3))
    pen = 2 * float(np.median(inside[ridge])) / per_pixel
    if PEN_RANGE[0] <= pen <= PEN_RANGE[1]:
        soft = np.clip(crop / level, 0, 1)
        return _fit(_crop_to_ink(soft > BBOX_INK, soft), Image.Resampling.LANCZOS)
    if pen < PEN_RANGE[0]:
        binary = ndimage.distance_transform_edt(~binary) <= (PEN_TARGET - pen) / 2 * per_pixel
    else:
        thinned = inside > (pen - PEN_TARGET) / 2 * per_pixel
        binary = thinned if thinned.any() else binary
    return _fit(_crop_to_ink(binary, binary.astype(np.float32)), Image.Resampling.BOX)


def deskew(images: torch.Tensor) -> torch.Tensor:
    """Straighten slanted digits (B, 1, 28, 28) float by their second moments (the classic MNIST deslant).

    Each image is sheared along x by -cov(x, y) / var(y) about its centre of mass, and the centre of
    mass is moved to the centre, so a digit's main axis ends upright. Batched: one grid_sample.
    """
    count, _, height, width = images.shape
    rows = torch.arange(height, dtype=images.dtype, device=images.device).view(1, height, 1)
    cols = torch.arange(width, dtype=images.dtype, device=images.device).view(1, 1, width)
    mass = images[:, 0].sum((1, 2)).clamp(min=1e-6)
    centre_row = (images[:, 0] * rows).sum((1, 2)) / mass
    centre_col = (images[:, 0] * cols).sum((1, 2)) / mass
    var_rows = (images[:, 0] * (rows - centre_row.view(-1, 1, 1)) ** 2).sum((1, 2)) / mass
    covariance = (images[:, 0] * (rows - centre_row.view(-1, 1, 1)) * (cols - centre_col.view(-1, 1, 1))).sum((1, 2))
    slope = (covariance / mass / var_rows.clamp(min=1e-6)).view(-1, 1, 1)
    source_rows = (rows + (centre_row.view(-1, 1, 1) - height / 2)).expand(count, height, width)
    source_cols = cols + slope * (rows - height / 2) + (centre_col.view(-1, 1, 1) - width / 2)
    grid = torch.stack([(2 * source_cols + 1) / width - 1, (2 * source_rows + 1) / height - 1], -1)
    return F.grid_sample(
        images, grid.expand(count, height, width, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _legacy_crop(gray: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """digitlab 0.1's ink finding: border background, noise floor, crop at a quarter of the stroke level."""
    ink = _legacy_ink_map(gray)
    strong = ink > BBOX_INK
    rows, cols = np.flatnonzero(strong.any(1)), np.flatnonzero(strong.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return ink[top:bottom, left:right], (left, top, right, bottom)


def _box3(values: np.ndarray, pad: str = "edge") -> np.ndarray:
    """3×3 mean filter (edges padded by `pad`, a numpy.pad mode): cheap smoothing that tames single-pixel noise."""
    padded = np.pad(values, 1, mode=pad)  # type: ignore[call-overload]  # numpy's stubs list the modes as literals
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / 9


def _legacy_ink_map(gray: np.ndarray) -> np.ndarray:
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
    if reach < max(LEGACY_MIN_CONTRAST, 1.5 * NOISE_SIGMAS * noise):
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
    border = np.concatenate(
        [gray[:frame].ravel(), gray[-frame:].ravel(), gray[:, :frame].ravel(), gray[:, -frame:].ravel()]
    )
    background = float(np.median(border))
    return background, 1.4826 * float(np.median(np.abs(border - background)))


def mnist_field(ink: np.ndarray) -> np.ndarray:
    """A float ink map in [0, 1] (white on black, any size) laid out as MNIST lays out a digit: cropped to its
    ink, the longer side fitted to 20 px, the centre of mass at the middle of 28×28."""
    return _centre(_fit(_crop_to_ink(ink > FAINT_INK, ink), Image.Resampling.LANCZOS))


def _crop_to_ink(mask: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """`values` (default: `mask` itself) cropped to the box of `mask`."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (mask if values is None else values)[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit(ink: np.ndarray, resample: Image.Resampling) -> np.ndarray:
    """Resize so the longer side is BOX, aspect kept (values clipped to [0, 1])."""
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.clip(np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, resample)), 0, 1)


def _centre(box: np.ndarray) -> np.ndarray:
    """Paste into FIELD² with the centre of mass at CENTRE."""
    mass = box.sum()
    if mass <= 0:
        raise ImageError("no ink found (blank image)")
    centre_row = (box.sum(1) * np.arange(box.shape[0])).sum() / mass
    centre_col = (box.sum(0) * np.arange(box.shape[1])).sum() / mass
    top, left = round(CENTRE - centre_row), round(CENTRE - centre_col)
    field = np.zeros((FIELD, FIELD), np.float32)
    rows = slice(max(top, 0), min(top + box.shape[0], FIELD))
    cols = slice(max(left, 0), min(left + box.shape[1], FIELD))
    field[rows, cols] = box[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    return field
