"""A suite of pictures that are not digits, rendered the ways the real-world suite renders digits.

Kinds: handwritten-looking letters (Latin and Greek) and short words in stroke fonts (Hershey, from the
HersheyFonts package) and handwriting fonts (Debian's fonts-* packages), symbols, doodles drawn from
a few dozen seeded shape programs, scribbles, two digits side by side, Fashion-MNIST items, crops of
the sample photographs that scikit-image ships, and blank paper. Letters and symbols are drawn with
a trembling pen of varied width and slant, fitted into MNIST's 28×28 field and then rendered by one
of the real-world suite's conditions (paper and shadow, pencil, JPEG, phone photo, pens, slant, a
small mark on a big page, ruled paper, a low-resolution scan, the web page's canvas), so they reach
`predict` as the same kinds of files digits do.

Three parts with nothing in common: `train` (for teaching a reader to say "none"), `val` (choosing
thresholds) and `test` (reporting only). They differ in fonts, in photographs, in the seeds of the
drawings and scribbles, and in the MNIST / Fashion-MNIST split the digits and items come from.
Letters whose handwritten shape is a digit's (O, o, I, l: 0 and 1) are left out: no reader could
refuse them and accept the digit.
"""

from __future__ import annotations

import io
import math
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.datasets import Split
from ..errors import DataError
from ..images.preprocess import mnist_field
from .doodles import DOODLES, Polyline
from .realworld import CONDITIONS, Sample, _encode

KINDS = ("letters", "words", "symbols", "doodles", "scribbles", "pairs", "fashion", "photos", "paper")
PARTS = ("train", "val", "test")
LATIN = "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz" if c not in "OoIl")
GREEK = "ABGDEZHQKLMNXPRSTUFCYWabgdezhqiklmnxprstufcyw"  # Hershey's Greek fonts map ASCII to Greek letters
SYMBOLS = "+=*#%&@?<>~$^{}"  # no / | ( ) [ ] ! - . , : each of which a hand draws as a 1 or a dot
GREEK_FONTS = ("greek", "greeks", "greekc", "timesg")
HERSHEY = {  # Hershey stroke fonts per part; the Greek ones draw GREEK
    "train": (
        "futural",
        "rowmans",
        "scripts",
        "greek",
        "timesi",
        "gothiceng",
        "rowmant",
        "timesrb",
        "timesg",
        "gothicita",
    ),
    "val": ("futuram", "greeks", "timesib"),
    "test": ("cursive", "scriptc", "greekc", "rowmand", "timesr"),
}
HANDWRITING = {  # Debian's handwriting fonts per part (tools/system-deps.sh installs them)
    "train": (
        "humor-sans/Humor-Sans.ttf",
        "comic-neue/ComicNeue-Regular.otf",
        "breip/breipfont.ttf",
        "fifthhorseman/dkg.ttf",
        "bwht/BecauseWeBuild-Regular.otf",
        "bwht/BecauseWeConnect-Regular.otf",
        "bwht/BecauseWeCreate-Regular.otf",
        "bwht/BecauseWeLearn-Regular.otf",
        "dancingscript/DancingScript-Regular.otf",
        "kristi/Kristi.ttf",
        "ecolier-court/Ecolier-court.ttf",
    ),
    "val": ("comic-neue/ComicNeue-Italic.otf",),
    "test": ("femkeklaver/femkeklaver.ttf", "sjfonts/SteveHand.ttf", "sjfonts/Delphine.ttf", "breip/Breip.ttf"),
}
FONT_FOLDERS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype"))
FONT_PACKAGES = {"fifthhorseman": "fonts-dkg-handwriting"}  # font folders not named after their package
PHOTOS = {  # scikit-image's sample pictures per part (none shows text or digits)
    "train": ("astronaut", "camera", "coffee", "chelsea", "coins", "rocket", "brick", "grass", "horse", "logo"),
    "val": ("cat", "clock", "colorwheel"),
    "test": ("moon", "gravel", "cell", "retina", "hubble_deep_field", "immunohistochemistry", "shepp_logan_phantom"),
}
DRAW_SIDE = 160  # letters and doodles are drawn this many px tall before fitting into 28×28
SEEDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_COUNT = 300  # pictures of each kind


@dataclass(frozen=True)
class NonDigit:
    """One rendered picture that is not a digit: its kind, the condition it was rendered in, the file bytes."""

    kind: str
    condition: str
    data: bytes
    suffix: str


def render_nondigits(
    part: str, count: int, digits: Split, fashion: Split, kinds: tuple[str, ...] = KINDS
) -> Iterator[NonDigit]:
    """Yield `count` pictures of each kind for `part`; `digits` and `fashion` are the MNIST and Fashion-MNIST
    splits the pairs and items come from (the part's own split: train, val or test)."""
    if part not in PARTS:
        raise DataError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    for number, kind in enumerate(KINDS):
        if kind not in kinds:
            continue
        rng = np.random.default_rng([SEEDS[part], number])
        draw = _DRAWERS[kind](part, rng, digits, fashion)
        conditions = list(CONDITIONS)
        for index in range(count):
            yield draw(index, conditions[index % len(conditions)])


def _ink_kind(make_field):
    """A drawer of ink pictures: make_field(part, rng, index, digits) -> 28×28 uint8 field, then a condition."""

    def drawer(part, rng, digits, fashion):
        def draw(index: int, condition: str) -> NonDigit:
            field = make_field(part, rng, index, digits)
            data, suffix = CONDITIONS[condition](field, rng)
            return NonDigit(kind, condition, data, suffix)

        kind = make_field.__name__.removeprefix("_")
        return draw

    return drawer


def _letters(part, rng, index, digits) -> np.ndarray:
    return _text_field(part, rng, index, 1)


def _words(part, rng, index, digits) -> np.ndarray:
    return _text_field(part, rng, index, int(rng.integers(2, 5)))


def _symbols(part, rng, index, digits) -> np.ndarray:
    return _text_field(part, rng, index, 1, alphabet=SYMBOLS)


def _doodles(part, rng, index, digits) -> np.ndarray:
    name = list(DOODLES)[index % len(DOODLES)]
    return field_of(draw_polylines(DOODLES[name](rng), rng))


def _scribbles(part, rng, index, digits) -> np.ndarray:
    """A pen that wanders: 6-16 points joined by a smooth curve, crossing itself."""
    points = rng.uniform(0, 1, (int(rng.integers(6, 17)), 2))
    return field_of(draw_polylines([_smooth(points)], rng))


def _pairs(part, rng, index, digits) -> np.ndarray:
    """Two digits of the part's split side by side, a little apart or touching."""
    first, second = (digits.images[i, 0].numpy() for i in rng.choice(len(digits), 2, replace=False))
    gap = int(rng.integers(-4, 6))
    page = np.zeros((28, 56 + gap), np.float32)
    page[:, :28] = first
    page[:, 28 + gap :] = np.maximum(page[:, 28 + gap :], second[:, : page.shape[1] - 28 - gap])
    return _to_uint8(mnist_field(page / 255))


def _text_field(part: str, rng: np.random.Generator, index: int, letters: int, alphabet: str | None = None):
    """`letters` characters in one of the part's fonts (Hershey strokes or a handwriting font, in turn)."""
    if index % 2 == 0:
        name = HERSHEY[part][(index // 2) % len(HERSHEY[part])]
        chars = alphabet or (GREEK if name in GREEK_FONTS else LATIN)
        strokes: list[Polyline] = []
        while not strokes:  # a few fonts lack a glyph (a symbol), drawn as nothing: draw another
            strokes = _hershey_strokes(name, "".join(rng.choice(list(chars), letters)))
        return field_of(draw_polylines(strokes, rng))
    path = _installed_font(HANDWRITING[part][(index // 2) % len(HANDWRITING[part])])
    ink = np.zeros((1, 1), np.float32)
    while not ink.any():  # as above: a glyph the font lacks may draw as nothing
        ink = _draw_font_text(path, "".join(rng.choice(list(alphabet or LATIN), letters)), rng)
    return field_of(ink)


def _hershey_strokes(name: str, text: str) -> list[Polyline]:
    from HersheyFonts import HersheyFonts

    font = HersheyFonts()
    font.load_default_font(name)
    return [np.asarray(stroke, np.float32) for stroke in font.strokes_for_text(text) if len(stroke) > 1]


def _font_file(relative: str) -> Path | None:
    return next((folder / relative for folder in FONT_FOLDERS if (folder / relative).is_file()), None)


def _font_package(relative: str) -> str:
    folder = relative.split("/")[0]
    return FONT_PACKAGES.get(folder, "fonts-" + folder)


def missing_font_packages() -> list[str]:
    """The Debian packages of the suite's handwriting fonts (every part) that this machine lacks."""
    fonts = [relative for part in PARTS for relative in HANDWRITING[part]]
    return sorted({_font_package(relative) for relative in fonts if _font_file(relative) is None})


def _installed_font(relative: str) -> Path:
    path = _font_file(relative)
    if path is None:
        raise DataError(
            f"font {relative} is missing: apt-get install {_font_package(relative)} (make deps installs it)"
        )
    return path


def draw_polylines(strokes: list[Polyline], rng: np.random.Generator) -> np.ndarray:
    """Strokes (any units) drawn with a trembling pen: scaled to DRAW_SIDE tall, slanted, jittered."""
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    scale = DRAW_SIDE / max(float(high[1] - low[1]), float(high[0] - low[0]) / 3, 1e-6)
    shear = math.tan(math.radians(rng.uniform(-15, 15)))
    pen = float(rng.uniform(0.07, 0.17)) * DRAW_SIDE  # MNIST's pen is about an eighth of a digit's height
    size = (int((high[0] - low[0]) * scale + DRAW_SIDE * 0.8 + 2 * pen), int(DRAW_SIDE + 2 * pen))
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        xy = (stroke - low) * scale
        xy[:, 0] += (DRAW_SIDE - xy[:, 1]) * shear + DRAW_SIDE * 0.4 + pen
        xy[:, 1] += pen
        xy += rng.normal(0, DRAW_SIDE * 0.006, xy.shape)  # the hand's tremor
        draw.line([tuple(point) for point in xy], fill=255, width=max(1, round(pen)), joint="curve")
        for x, y in (xy[0], xy[-1]):  # round pen ends
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=255)
    return np.asarray(canvas, np.float32) / 255


def _draw_font_text(path: Path, text: str, rng: np.random.Generator) -> np.ndarray:
    font = ImageFont.truetype(str(path), DRAW_SIDE)
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (int(right - left) + 40, int(bottom - top) + 40), 0)
    ImageDraw.Draw(canvas).text((20 - left, 20 - top), text, font=font, fill=255)
    shear = math.tan(math.radians(rng.uniform(-12, 12)))
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, (1, shear, -shear * canvas.height / 2, 0, 1, 0))
    return np.asarray(canvas, np.float32) / 255


def _smooth(points: np.ndarray, steps: int = 12) -> Polyline:
    """A Catmull-Rom curve through `points` (N, 2)."""
    padded = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0, 1, steps, endpoint=False)[:, None]
    pieces = []
    for p0, p1, p2, p3 in zip(padded, padded[1:], padded[2:], padded[3:], strict=False):
        pieces.append(
            0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        )
    return np.concatenate([*pieces, points[-1:]]).astype(np.float32)


def field_of(ink: np.ndarray) -> np.ndarray:
    return _to_uint8(mnist_field(ink))


def _to_uint8(field: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(field, 0, 1) * 255).astype(np.uint8)


def _fashion(part, rng, digits, fashion):
    """Fashion-MNIST items of the part's split, as the 28×28 PNG files they are."""

    def draw(index: int, condition: str) -> NonDigit:
        item = fashion.images[int(rng.integers(len(fashion))), 0].numpy()
        return NonDigit("fashion", "png-28", _encode(item), ".png")

    return draw


def _photos(part, rng, digits, fashion):
    """Crops of the part's sample photographs, at phone-ish sizes, colour or grey, as JPEG files."""
    pictures = [_sample_picture(name) for name in PHOTOS[part]]

    def draw(index: int, condition: str) -> NonDigit:
        picture = pictures[index % len(pictures)]
        width, height = picture.size
        side = int(rng.uniform(0.3, 1.0) * min(width, height))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        crop = picture.crop((left, top, left + side, top + side)).resize((int(rng.integers(200, 800)),) * 2)
        if rng.random() < 0.3:
            crop = crop.convert("L")
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=int(rng.integers(60, 95)))
        return NonDigit("photos", "photo-crop", buffer.getvalue(), ".jpg")

    return draw


def _paper(part, rng, digits, fashion):
    """Blank pages in every condition: paper, light, shadow, lines, grain, and no ink at all."""
    empty = np.zeros((28, 28), np.uint8)

    def draw(index: int, condition: str) -> NonDigit:
        data, suffix = CONDITIONS[condition](empty, rng)
        return NonDigit("paper", condition, data, suffix)

    return draw


def _sample_picture(name: str) -> Image.Image:
    try:
        import skimage.data
    except ImportError:
        raise DataError("the non-digit suite's photos come from scikit-image: pip install 'digitlab[suites]'") from None

    pixels = np.asarray(getattr(skimage.data, name)())
    if pixels.dtype == bool:
        pixels = pixels.astype(np.float64)
    if pixels.dtype != np.uint8:
        pixels = np.rint(255 * (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1e-6)).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


_DRAWERS = {
    "letters": _ink_kind(_letters),
    "words": _ink_kind(_words),
    "symbols": _ink_kind(_symbols),
    "doodles": _ink_kind(_doodles),
    "scribbles": _ink_kind(_scribbles),
    "pairs": _ink_kind(_pairs),
    "fashion": _fashion,
    "photos": _photos,
    "paper": _paper,
}


def as_sample(picture: NonDigit, label: int = -1) -> Sample:
    """The picture as a real-world-suite Sample (label -1: no digit), for `read_suite`."""
    return Sample(picture.condition, label, picture.data, picture.suffix)


def turned_away(prediction) -> bool:
    """Whether predict turned a picture away: refused as not a digit, or no digit found in it at all."""
    return not prediction.ok or bool(prediction.rejected)


def read_as_files(predict: Callable[[list[Path]], list], pictures) -> list:
    """Write each (name, bytes) to a temporary folder and read them all with `predict`, as a folder is read."""
    with tempfile.TemporaryDirectory(prefix="digitlab-suite-") as folder:
        paths = []
        for name, data in pictures:
            paths.append(Path(folder) / name)
            paths[-1].write_bytes(data)
        return predict(paths)


def score_nondigits(
    predict: Callable[[list[Path]], list], digits: Split, fashion: Split, part: str = "test", count: int = DEFAULT_COUNT
) -> dict:
    """Share of each kind of the suite's `part` that `predict` (paths -> Predictions, errors collected) turns
    away, read as files; the digits accepted instead, and how sure it was of them."""
    pictures = list(render_nondigits(part, count, digits, fashion))
    answers = read_as_files(predict, ((f"{i:05d}-{p.kind}{p.suffix}", p.data) for i, p in enumerate(pictures)))
    kinds = {}
    for kind in KINDS:
        mine = [answer for answer, picture in zip(answers, pictures, strict=True) if picture.kind == kind]
        accepted = [answer for answer in mine if not turned_away(answer)]
        kinds[kind] = {
            "count": len(mine),
            "turned_away": sum(map(turned_away, mine)) / len(mine),
            "no_digit_found": sum(not answer.ok for answer in mine) / len(mine),
            "accepted_as": dict(Counter(answer.label for answer in accepted).most_common()),
            "accepted_median_confidence": statistics.median(a.confidence for a in accepted) if accepted else None,
        }
    overall = sum(map(turned_away, answers)) / len(answers)
    return {"part": part, "count": count, "pictures": len(answers), "turned_away": overall, "kinds": kinds}
