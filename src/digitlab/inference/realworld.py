"""A real-world suite: MNIST digits re-rendered the ways people's pictures of digits differ.

Each condition turns one 28×28 MNIST digit into the bytes of an image file a person might give
`digitlab predict`: dark ink on light paper under uneven light and a shadow, faint pencil on grey
paper, a low-quality JPEG, a phone photo (perspective, blur, tinted paper), thin and heavy pens,
slanted writing, a small digit off-centre on a large page, ruled or squared paper with specks, a
small low-resolution scan blown up, and a drawing from the web page's canvas (thick white strokes
on black, 280×280). Everything is drawn from seeded generators, so a suite is fixed by
(split, count per condition, seed): the part rendered from validation digits chooses recipes and
thresholds, the part rendered from test digits only reports.

Strokes are redrawn at 8× resolution: the digit is upsampled, cut at half intensity, and then
dilated or eroded with a disc to change the pen's width (MNIST's pen is about 2.5 px at 28 px).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from scipy import ndimage
from torch import nn

from ..config import PreprocessOptions
from ..data.datasets import Split
from ..errors import ImageError
from ..images.preprocess import decode_image, preprocess_image
from .evaluate import predict_logits

HIRES = 8  # strokes are redrawn at 28 * HIRES px
MNIST_PEN = 2.5  # stroke width of an MNIST digit, in 28-px pixels


@dataclass(frozen=True)
class Sample:
    """One rendered picture: its condition, the true class index, and the encoded file bytes."""

    condition: str
    label: int
    data: bytes
    suffix: str  # ".png" or ".jpg"


def stroke_mask(digit: np.ndarray, width: float = 1.0, slant: float = 0.0) -> np.ndarray:
    """The digit's strokes as a (224, 224) float mask in {0, 1}, drawn with `width` × MNIST's pen.

    `slant` shears the strokes by that many degrees (positive leans the top right).
    """
    up = F.interpolate(
        torch.from_numpy(digit.astype(np.float32) / 255)[None, None],
        scale_factor=HIRES,
        mode="bicubic",
        align_corners=False,
    )
    if slant:
        shear = math.tan(math.radians(slant))
        theta = torch.tensor([[[1.0, shear, 0.0], [0.0, 1.0, 0.0]]])
        up = F.grid_sample(up, F.affine_grid(theta, list(up.shape), align_corners=False), align_corners=False)
    mask = up[0, 0].numpy() > 0.5
    radius = abs(width - 1) * MNIST_PEN * HIRES / 2
    if width > 1:  # every pixel within `radius` of the strokes
        mask = ndimage.distance_transform_edt(~mask) <= radius
    elif width < 1:  # the strokes' pixels farther than `radius` from the paper
        mask = ndimage.distance_transform_edt(mask) > radius
    return mask.astype(np.float32)


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average (or bilinear, when enlarging) resize of a float image to (width, height)."""
    image = Image.fromarray(values.astype(np.float32))
    enlarging = size[0] > values.shape[1]
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR if enlarging else Image.Resampling.BOX))


def _crop_to_strokes(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return mask
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _coverage(mask: np.ndarray, height: int) -> np.ndarray:
    """The cropped stroke mask scaled so the digit is `height` px tall: ink coverage in [0, 1]."""
    crop = _crop_to_strokes(mask)
    scale = height / crop.shape[0]
    return np.clip(_resize(crop, (max(1, round(crop.shape[1] * scale)), height)), 0, 1)


def _place(page: np.ndarray, coverage: np.ndarray, top: int, left: int, ink: float) -> None:
    """Lay ink of gray level `ink` over `page` (in place) where `coverage` says, at (top, left)."""
    height, width = coverage.shape
    region = page[top : top + height, left : left + width]
    cover = coverage[: region.shape[0], : region.shape[1]]
    region[...] = region * (1 - cover) + ink * cover


def _lighting(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A multiplicative light field: a linear gradient across the page in a random direction."""
    height, width = shape[:2]
    angle = rng.uniform(0, 2 * math.pi)
    rows, cols = _grid(height, width)
    ramp = np.cos(angle) * cols / width + np.sin(angle) * rows / height
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    return 1 - strength * ramp


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column numbers as float32 (H, 1) and (1, W), broadcast where used: np.mgrid's two full int64
    planes cost 31 MB for a 1600×1200 photo."""
    return np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)[None, :]


def _shadow(shape: tuple[int, ...], rng: np.random.Generator, depth: float) -> np.ndarray:
    """A soft-edged shadow (a hand or a phone) over part of the page, as a multiplicative field."""
    height, width = shape[:2]
    angle = rng.uniform(0, 2 * math.pi)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    centre = rng.uniform(0.2, 0.8, 2) * (width, height)
    distance = np.cos(angle) * (cols - centre[0]) + np.sin(angle) * (rows - centre[1])
    softness = rng.uniform(0.03, 0.12) * max(height, width)
    return 1 - depth / (1 + np.exp(-distance / softness))


def _noise(page: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return page + sigma * rng.standard_normal(page.shape, dtype=np.float32)


def _encode(pixels: np.ndarray, suffix: str = ".png", quality: int = 90) -> bytes:
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if suffix == ".jpg":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _sheet(
    coverage: np.ndarray,
    rng: np.random.Generator,
    margin: tuple[float, float] = (1.3, 2.2),
    paper: float | None = None,
    ink: float | None = None,
) -> np.ndarray:
    """A page somewhat larger than the digit, the digit at a random place on it (float gray levels)."""
    height, width = coverage.shape
    page_h = int(height * rng.uniform(*margin))
    page_w = max(int(width + height * (rng.uniform(*margin) - 1)), width + 2)
    paper = rng.uniform(195, 245) if paper is None else paper
    page = np.full((page_h, page_w), paper, np.float32)
    top, left = rng.integers(0, page_h - height + 1), rng.integers(0, page_w - width + 1)
    _place(page, coverage, int(top), int(left), rng.uniform(10, 70) if ink is None else ink)
    return page


def paper_shadow(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """Dark ink on light paper, a light gradient across the page and a soft shadow over part of it."""
    page = _sheet(_coverage(stroke_mask(digit, rng.uniform(0.8, 1.4)), int(rng.integers(80, 300))), rng)
    page = page * _lighting(page.shape, rng, rng.uniform(0.1, 0.35)) * _shadow(page.shape, rng, rng.uniform(0.2, 0.5))
    return _encode(_noise(page, rng, rng.uniform(1, 5))), ".png"


def pencil_grey(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """Faint pencil on grey paper: 20-45 gray levels of contrast, grainy graphite, a little light falloff."""
    coverage = _coverage(stroke_mask(digit, rng.uniform(0.6, 1.1)), int(rng.integers(80, 260)))
    coverage = coverage * rng.uniform(0.55, 1.0, coverage.shape)  # graphite leaves the paper's grain showing
    paper = rng.uniform(110, 175)
    page = _sheet(coverage, rng, paper=paper, ink=paper - rng.uniform(20, 45))
    page = page * _lighting(page.shape, rng, rng.uniform(0.0, 0.15))
    return _encode(_noise(page, rng, rng.uniform(2, 5)), ".jpg", quality=int(rng.integers(80, 95))), ".jpg"


def jpeg_low(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """A clean scan saved as a low-quality JPEG (quality 8-25)."""
    page = _sheet(_coverage(stroke_mask(digit, rng.uniform(0.8, 1.4)), int(rng.integers(40, 160))), rng)
    return _encode(_noise(page, rng, 2), ".jpg", quality=int(rng.integers(8, 26))), ".jpg"


def phone_photo(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """A phone photo of a note: tinted paper, perspective, blur, sensor noise, JPEG."""
    height = int(rng.integers(150, 420))
    page = _sheet(_coverage(stroke_mask(digit, rng.uniform(0.7, 1.6)), height), rng, margin=(1.8, 3.2))
    page = page * _lighting(page.shape, rng, rng.uniform(0.05, 0.3))
    tint = rng.uniform(0.88, 1.0, 3)
    colour = Image.fromarray(np.clip(np.stack([page * t for t in tint], -1), 0, 255).astype(np.uint8))
    width, tall = colour.size
    corners = np.array([[0, 0], [width, 0], [width, tall], [0, tall]], np.float64)
    moved = corners + rng.uniform(-0.08, 0.08, corners.shape) * (width, tall)
    colour = colour.transform(
        colour.size,
        Image.Transform.PERSPECTIVE,
        _perspective(corners, moved),
        Image.Resampling.BILINEAR,
        fillcolor=tuple(int(200 * t) for t in tint),
    )
    colour = colour.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.5) * height / 200))
    pixels = _noise(np.asarray(colour, np.float32), rng, rng.uniform(2, 6))
    return _encode(pixels, ".jpg", quality=int(rng.integers(60, 90))), ".jpg"


def _perspective(source: np.ndarray, target: np.ndarray) -> tuple[float, ...]:
    """Coefficients of PIL's PERSPECTIVE transform mapping `target` corners back onto `source`."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=False):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return tuple(np.linalg.solve(np.array(rows), source.reshape(-1)).tolist())


def thin_pen(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """A fine pen (0.35-0.6× MNIST's stroke) on a large digit, so the line is a few pixels in a big picture."""
    page = _sheet(_coverage(stroke_mask(digit, rng.uniform(0.35, 0.6)), int(rng.integers(120, 400))), rng)
    return _encode(_noise(page, rng, rng.uniform(1, 4)), ".png"), ".png"


def heavy_pen(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """A marker (1.8-2.5× MNIST's stroke)."""
    page = _sheet(_coverage(stroke_mask(digit, rng.uniform(1.8, 2.5)), int(rng.integers(60, 300))), rng)
    return _encode(_noise(page, rng, rng.uniform(1, 4)), ".png"), ".png"


def slant(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """Writing slanted by 10-20° either way."""
    angle = rng.uniform(10, 20) * rng.choice([-1, 1])
    page = _sheet(_coverage(stroke_mask(digit, rng.uniform(0.8, 1.4), slant=angle), int(rng.integers(60, 260))), rng)
    return _encode(_noise(page, rng, rng.uniform(1, 4)), ".png"), ".png"


def off_centre(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """A small digit (30-90 px) anywhere on a large page (600-1600 px), in gently uneven light."""
    coverage = _coverage(stroke_mask(digit, rng.uniform(0.8, 1.5)), int(rng.integers(30, 91)))
    page_h, page_w = int(rng.integers(600, 1201)), int(rng.integers(800, 1601))
    page = np.full((page_h, page_w), rng.uniform(195, 245), np.float32)
    top = int(rng.integers(0, page_h - coverage.shape[0]))
    left = int(rng.integers(0, page_w - coverage.shape[1]))
    _place(page, coverage, top, left, rng.uniform(10, 70))
    page = page * _lighting((page_h, page_w), rng, rng.uniform(0.0, 0.2))
    return _encode(_noise(page, rng, rng.uniform(1, 4)), ".jpg", quality=90), ".jpg"


def ruled_paper(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """Ruled or squared paper, sometimes with a margin line, with specks of dirt, and the digit across the lines."""
    height = int(rng.integers(60, 200))
    coverage = _coverage(stroke_mask(digit, rng.uniform(0.8, 1.5)), height)
    page_h, page_w = int(height * rng.uniform(1.6, 2.6)), int(coverage.shape[1] + height * rng.uniform(0.8, 1.8))
    paper = rng.uniform(200, 245)
    page = np.full((page_h, page_w), paper, np.float32)
    spacing = height * rng.uniform(0.3, 0.55)
    line_ink, line_width = paper - rng.uniform(25, 70), max(1, int(rng.integers(1, 4)))
    for row in np.arange(rng.uniform(0, spacing), page_h, spacing).astype(int):
        page[row : row + line_width] = line_ink
    if rng.random() < 0.5:  # squared paper
        for col in np.arange(rng.uniform(0, spacing), page_w, spacing).astype(int):
            page[:, col : col + line_width] = line_ink
    elif rng.random() < 0.5:  # a margin line
        col = int(rng.uniform(0.05, 0.2) * page_w)
        page[:, col : col + line_width + 1] = paper - rng.uniform(40, 80)
    top = int(rng.integers(0, page_h - coverage.shape[0] + 1))
    left = int(rng.integers(0, page_w - coverage.shape[1] + 1))
    _place(page, coverage, top, left, rng.uniform(10, 60))
    for _ in range(int(rng.integers(3, 15))):  # specks: dots of 1-3 px
        size = int(rng.integers(1, 4))
        row, col = int(rng.integers(0, page_h - size)), int(rng.integers(0, page_w - size))
        page[row : row + size, col : col + size] = rng.uniform(20, 120)
    return _encode(_noise(page, rng, rng.uniform(1, 4)), ".png"), ".png"


def low_res_scan(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """A tiny scan (digit 10-18 px tall) blown up 4-10× with bilinear or nearest-neighbour scaling."""
    small = _sheet(_coverage(stroke_mask(digit, rng.uniform(0.8, 1.4)), int(rng.integers(10, 19))), rng)
    small = _noise(small, rng, rng.uniform(1, 4))
    factor = rng.uniform(4, 10)
    resample = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
    size = (round(small.shape[1] * factor), round(small.shape[0] * factor))
    big = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize(size, resample)
    return _encode(np.asarray(big, np.float32)), ".png"


def canvas(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """A drawing from the web page's pad: white strokes 20 px wide on a black 280×280 canvas, anywhere on it."""
    height = int(rng.integers(110, 241))
    # the pad's pen is 20 px whatever the digit's size: as a multiple of MNIST's pen scaled to this height
    width = 20 / (MNIST_PEN * height / 20)
    coverage = _coverage(stroke_mask(digit, width), height)
    if coverage.shape[1] > 280:  # something wider than tall (two digits, a word) is drawn smaller, not cut off
        coverage = _coverage(stroke_mask(digit, width), height * 280 // coverage.shape[1])
    pad = np.zeros((280, 280), np.float32)
    top = int(rng.integers(0, 280 - coverage.shape[0] + 1))
    left = int(rng.integers(0, 280 - coverage.shape[1] + 1))
    _place(pad, coverage, top, left, 255.0)
    rgba = np.concatenate([np.repeat(pad[..., None], 3, -1), np.full((280, 280, 1), 255, np.float32)], -1)
    return _encode(rgba), ".png"


PHONE_SIZE = (4000, 3000)  # a 12-megapixel phone photo, landscape (width, height)


def phone_page(
    digit: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int] = PHONE_SIZE,
    height: int | None = None,
    paper: str = "plain",
    corner: bool = False,
) -> tuple[Image.Image, tuple]:
    """A digit written on a sheet and photographed at phone resolution, fast enough to make hundreds.

    Paper grain at two scales (a blotchy texture upsampled, and a fine noise tile), a light gradient,
    `paper` "plain", "ruled" or "squared", and the digit `height` px tall (default a sixth of the
    picture's height) anywhere on it, or in a corner. Returns the RGB picture, slightly tinted, and
    the digit's box (x0, y0, x1, y1) in its pixels.
    """
    width, tall = size
    coverage = _coverage(stroke_mask(digit, rng.uniform(0.9, 1.3)), height or tall // 6)
    texture = rng.normal(rng.uniform(200, 235), 5, (max(2, tall // 16), max(2, width // 16))).astype(np.float32)
    texture *= _lighting(texture.shape, rng, rng.uniform(0.05, 0.2))
    page = np.asarray(Image.fromarray(texture).resize(size, Image.Resampling.BILINEAR))
    grain = rng.normal(0, rng.uniform(1.5, 4), (256, 256)).astype(np.float32)
    page = page + np.tile(grain, (-(-tall // 256), -(-width // 256)))[:tall, :width]
    if paper in ("ruled", "squared"):
        spacing, line = int(coverage.shape[0] * rng.uniform(0.35, 0.5)), page.mean() - rng.uniform(30, 60)
        page[int(rng.integers(0, spacing)) :: spacing] = line
        if paper == "squared":
            page[:, int(rng.integers(0, spacing)) :: spacing] = line
    rows, cols = coverage.shape
    top, left = (
        (tall - rows - 8, 8) if corner else (int(rng.integers(0, tall - rows)), int(rng.integers(0, width - cols)))
    )
    _place(page, coverage, top, left, rng.uniform(15, 60))
    gray = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    tint = rng.uniform(0.9, 1.0, 3)
    picture = Image.merge("RGB", [gray.point(lambda level, t=t: level * t) for t in tint])
    return picture, (left, top, left + cols, top + rows)


CONDITIONS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[bytes, str]]] = {
    "paper-shadow": paper_shadow,
    "pencil-grey": pencil_grey,
    "jpeg-low": jpeg_low,
    "phone-photo": phone_photo,
    "thin-pen": thin_pen,
    "heavy-pen": heavy_pen,
    "slant": slant,
    "off-centre": off_centre,
    "ruled-paper": ruled_paper,
    "low-res-scan": low_res_scan,
    "canvas": canvas,
}
PARTS = ("val", "test")  # the dataset split each part of the suite is rendered from
DEFAULT_COUNT = 300  # digits per condition


def render_suite(
    images: torch.Tensor,
    labels: torch.Tensor,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    conditions: tuple[str, ...] | None = None,
):
    """Yield `count` Samples per condition, from digits of (images, labels) chosen by `seed`.

    Condition k draws its digits and its randomness from its own generator (seed, k), so a suite
    does not change when another condition is added or removed.
    """
    for number, name in enumerate(CONDITIONS):
        if conditions is not None and name not in conditions:
            continue
        rng = np.random.default_rng([seed, number])
        chosen = rng.choice(len(labels), size=min(count, len(labels)), replace=False)
        for index in chosen:
            data, suffix = CONDITIONS[name](images[index, 0].numpy(), rng)
            yield Sample(name, int(labels[index]), data, suffix)


@dataclass
class ReadSuite:
    """A rendered suite after preprocessing: the 28×28 images the model will see (a refused picture is
    all black and marked), the true labels, each picture's condition, and the options used."""

    images: torch.Tensor  # uint8 (N, 1, 28, 28)
    labels: torch.Tensor  # int64 (N,)
    conditions: list[str]
    refused: torch.Tensor  # bool (N,)
    options: PreprocessOptions


def read_suite(samples, options: PreprocessOptions = PreprocessOptions()) -> ReadSuite:
    """Decode every sample's bytes with `decode_image`'s guards and prepare it with `options`, as `predict`
    reads a file; a picture it refuses (as blank, say) becomes a black image marked refused."""
    images, labels, conditions, refused = [], [], [], []
    for sample in samples:
        labels.append(sample.label)
        conditions.append(sample.condition)
        try:
            images.append(preprocess_image(decode_image(sample.data, sample.condition), options))
            refused.append(False)
        except ImageError:
            images.append(torch.zeros(1, 28, 28, dtype=torch.uint8))
            refused.append(True)
    return ReadSuite(torch.stack(images), torch.tensor(labels), conditions, torch.tensor(refused), options)


def suite_accuracy(model: nn.Module, suite: ReadSuite) -> dict:
    """{overall, conditions: {name: accuracy}, refused: {name: count}, images}; a refused picture is a miss."""
    hits = (predict_logits(model, suite.images).argmax(1) == suite.labels) & ~suite.refused
    names = list(dict.fromkeys(suite.conditions))
    masks = {name: torch.tensor([condition == name for condition in suite.conditions]) for name in names}
    return {
        "overall": hits.double().mean().item(),
        "conditions": {name: hits[mask].double().mean().item() for name, mask in masks.items()},
        "refused": {name: int(suite.refused[mask].sum()) for name, mask in masks.items()},
        "images": len(suite.labels),
        "preprocess": suite.options.to_dict(),
    }


def score_suite(
    model: nn.Module,
    split: Split,
    part: str = "test",
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    options: PreprocessOptions = PreprocessOptions(),
    conditions: tuple[str, ...] | None = None,
) -> dict:
    """Accuracy of `model` on the suite rendered from `split` (read_suite, then suite_accuracy), with the
    suite's part, count and seed recorded."""
    suite = read_suite(render_suite(split.images, split.labels, count, seed, conditions), options)
    return {"part": part, "count": count, "seed": seed, **suite_accuracy(model, suite)}
