"""Preprocessing: real pictures become MNIST-style 28×28 digits; bad files are one-line ImageErrors."""

import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from digitlab.config import PreprocessOptions
from digitlab.errors import ImageError
from digitlab.images import ink as ink_module
from digitlab.images import preprocess as prepare_module
from digitlab.images.ink import Ink, all_strokes, digit_strokes, find_ink, strokes
from digitlab.images.preprocess import (
    as_drawing,
    deskew,
    image_files,
    load_image,
    mnist_field,
    prepare,
    preprocess_file,
    preprocess_image,
)
from scans import png_bytes, render_scan


def centre_of_mass(image: torch.Tensor) -> tuple[float, float]:
    pixels = image[0].double()
    index = torch.arange(pixels.shape[0], dtype=torch.double)
    mass = pixels.sum()
    return float((pixels.sum(1) * index).sum() / mass), float((pixels.sum(0) * index).sum() / mass)


def box_size(image: torch.Tensor, threshold: int = 64) -> tuple[int, int]:
    rows, cols = torch.nonzero(image[0] > threshold, as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_an_mnist_digit_comes_back_unchanged(mnist):
    digits = mnist.test.images[:200]
    out = torch.stack([preprocess_image(digit) for digit in digits])
    assert out.dtype == torch.uint8 and out.shape == digits.shape
    assert (out.float() - digits.float()).abs().mean() < 2.0  # gray levels, out of 255
    assert all(abs(c - 14) <= 0.5 for image in out for c in centre_of_mass(image))
    # a picture that already is an MNIST digit (ink on black, centred by mass) is left exactly as it is; all
    # 200 are. Were its centre misjudged, it would be cropped, fitted and redrawn again: close, not equal.
    assert torch.equal(out, digits)


def test_a_scan_becomes_the_mnist_digit_it_was_made_from(mnist):
    rng = np.random.default_rng(1)
    correlations = []
    for digit in mnist.test.images[:20]:
        scan = render_scan(digit[0].numpy(), rng)
        assert np.median(np.asarray(scan)) > 150  # light paper, dark ink: the opposite of MNIST
        out = preprocess_image(scan)
        correlations.append(np.corrcoef(out.flatten().float(), digit.flatten().float())[0, 1])
    # thin strokes (a "1") can land half a pixel off, which costs correlation but not the shape
    assert np.median(correlations) > 0.95 and min(correlations) > 0.6


def test_the_longer_side_is_fitted_to_20_and_the_mass_centred():
    canvas = np.full((300, 400), 230, np.uint8)
    canvas[40:60, 250:390] = 20  # a wide dark bar, off-centre: 140 × 20 px
    out = preprocess_image(canvas)
    assert box_size(out) == (3, 20)
    assert all(abs(c - 14) <= 0.5 for c in centre_of_mass(out))


def test_every_input_layout_gives_the_same_digit(mnist):
    ink = mnist.test.images[3, 0].numpy()
    paper = 255 - ink  # dark on light
    rgb = np.stack([paper] * 3, axis=-1)
    transparent = np.zeros((28, 28, 4), np.uint8)
    transparent[..., 3] = ink  # black strokes on a transparent background, as a web canvas exports them
    wide = Image.fromarray(paper.astype(np.uint16) * 257)  # 16-bit grayscale
    expected = preprocess_image(Image.fromarray(paper))
    for variant in (
        paper,
        paper / 255.0,
        torch.from_numpy(paper),
        ink,
        rgb,
        rgb.transpose(2, 0, 1),
        Image.fromarray(rgb),
        Image.fromarray(transparent),
        transparent,
        wide,
    ):
        assert (preprocess_image(variant).int() - expected.int()).abs().max() <= 1
    binary = preprocess_image(ink > 127)
    assert np.corrcoef(binary.flatten().float(), expected.flatten().float())[0, 1] > 0.9


@pytest.mark.parametrize(
    "picture",
    [
        np.full((50, 60), 255, np.uint8),
        np.zeros((50, 60), np.uint8),
        np.full((50, 60), 128, np.uint8),
        np.clip(np.random.default_rng(0).normal(220, 6, (300, 300)), 0, 255).astype(np.uint8),
        np.zeros((40, 40, 4), np.uint8),
    ],
)
def test_blank_pictures_are_an_error(picture):
    with pytest.raises(ImageError, match="no ink found"):
        preprocess_image(picture)


def test_isolated_specks_do_not_move_the_crop(mnist):
    rng = np.random.default_rng(2)
    scan = np.asarray(render_scan(mnist.test.images[5, 0].numpy(), rng, side=120)).copy()
    clean = preprocess_image(scan)
    specks = scan.copy()
    specks[2, 2] = specks[-3, -3] = specks[3, -4] = specks[-2, 5] = 0  # dust in the corners, far from the digit
    assert torch.equal(preprocess_image(specks), clean)


def test_bad_arrays_are_an_error():
    with pytest.raises(ImageError, match="expected an image array"):
        preprocess_image(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ImageError, match="NaN"):
        preprocess_image(np.full((10, 10), np.nan))


def write_png_with_declared_size(path, width, height):
    """A valid tiny PNG whose header claims width × height: what a decompression bomb looks like before decoding."""
    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def files(tmp_path, mnist):
    good = tmp_path / "seven.png"
    good.write_bytes(png_bytes(render_scan(mnist.test.images[0, 0].numpy(), np.random.default_rng(3))))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (tmp_path / "notes.png").write_text("not a picture\n")
    (tmp_path / "empty.png").write_bytes(b"")
    return {
        "good": good,
        "truncated": truncated,
        "text": tmp_path / "notes.png",
        "empty": tmp_path / "empty.png",
        "bomb": write_png_with_declared_size(tmp_path / "bomb.png", 12_000, 9_000),
        "pillow_bomb": write_png_with_declared_size(tmp_path / "huge.png", 20_000, 20_000),
    }


@pytest.mark.parametrize(
    "name, needle",
    [
        ("text", "not an image file"),
        ("empty", "empty file"),
        ("truncated", "truncated or corrupt"),
        ("bomb", "12000×9000 pixels (108 megapixels), more than the 100 megapixels allowed (decompression-bomb guard)"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(files, name, needle):
    started = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        load_image(files[name])
    message = str(caught.value)
    assert message.startswith(f"{files[name]}: ") and needle in message and "\n" not in message
    assert time.perf_counter() - started < 5  # a bomb is refused from its header, never decoded


def test_pillows_own_bomb_check_is_caught_too(files):
    with pytest.raises(ImageError, match=r"more than the 179 megapixels allowed \(decompression-bomb guard\)"):
        load_image(files["pillow_bomb"], max_pixels=10**12)


def test_missing_folder_and_oversized_files_are_refused(files, tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="more than the 100 allowed"):
        load_image(files["good"], max_bytes=100)


def test_a_blank_file_names_the_file(tmp_path):
    path = tmp_path / "blank.png"
    path.write_bytes(png_bytes(Image.new("L", (64, 64), 235)))
    with pytest.raises(ImageError, match=f"^{path}: no ink found"):
        preprocess_file(path)


def test_jpeg_exif_rotation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    path = tmp_path / "photo.jpg"
    Image.new("L", (60, 10), 200).save(path, format="JPEG", exif=exif)
    assert load_image(path).size == (10, 60)


def test_a_folder_lists_its_image_files_by_name(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [path.name for path in image_files(tmp_path)] == ["a.JPG", "b.png"]


def test_a_small_digit_on_a_big_page_is_read_from_the_pages_own_pixels(mnist, monkeypatch):
    """The ink is found on a copy shrunk for speed; a digit that comes out small there is looked at again in
    the picture's own pixels, so it is prepared as if the picture were only the sheet around it."""
    from digitlab.images import preprocess
    from digitlab.inference.realworld import phone_page

    picture, (x0, y0, x1, y1) = phone_page(mnist.test.images[0, 0].numpy(), np.random.default_rng(1), height=90)
    margin = 2 * (y1 - y0)
    around = picture.crop((max(0, x0 - margin), max(0, y0 - margin), x1 + margin, y1 + margin))
    reference = preprocess.prepare(around).image.float()
    closer = preprocess.prepare(picture)
    assert all(abs(found - true) <= 6 for found, true in zip(closer.box, (x0, y0, x1, y1), strict=True))
    monkeypatch.setattr(preprocess, "DETAIL_SIDE", 0)
    coarse = preprocess.prepare(picture).image.float()
    assert (closer.image.float() - reference).abs().mean() < 0.5 * (coarse - reference).abs().mean()


def test_the_legacy_pipeline_also_turns_a_scan_into_its_mnist_digit(mnist):
    # digitlab 0.1's pipeline, which model files saved before preprocessing was recorded still get
    legacy = PreprocessOptions(legacy=True)
    rng = np.random.default_rng(2)
    correlations = []
    for number, digit in enumerate(mnist.test.images[:10]):
        scan = np.asarray(render_scan(digit[0].numpy(), rng))
        out = preprocess_image(scan if number % 2 else 255 - scan, legacy)  # light ink on dark paper too
        assert out[0, :2].max() == out[0, :, :2].max() == 0  # paper becomes exactly black
        assert all(abs(c - 14) <= 0.5 for c in centre_of_mass(out))
        correlations.append(np.corrcoef(out.flatten().float(), digit.flatten().float())[0, 1])
    assert np.median(correlations) > 0.9
    with pytest.raises(ImageError, match="no ink"):
        preprocess_image(
            np.full((80, 80), 200, np.uint8) + np.random.default_rng(0).integers(0, 3, (80, 80), np.uint8), legacy
        )


def ink_moments(image: torch.Tensor) -> tuple[float, float, float, float]:
    """Mass, centre (row, column) and slope cov(row, column) / var(row) of one (1, H, W) float image."""
    pixels = image[0].double()
    rows = torch.arange(pixels.shape[0], dtype=torch.double).view(-1, 1)
    cols = torch.arange(pixels.shape[1], dtype=torch.double).view(1, -1)
    mass = pixels.sum()
    row, col = (pixels * rows).sum() / mass, (pixels * cols).sum() / mass
    slope = (pixels * (rows - row) * (cols - col)).sum() / (pixels * (rows - row) ** 2).sum()
    return float(mass), float(row), float(col), float(slope)


def test_deskew_stands_a_slanted_stroke_upright_and_centres_it():
    slanted = torch.zeros(2, 1, 28, 28)
    for row in range(6, 22):
        slanted[0, 0, row, 8 + int(0.6 * (row - 6)) : 11 + int(0.6 * (row - 6))] = 1  # leaning right, off-centre
    slanted[1, 0, 4:24, 13:15] = 1  # already upright and centred
    straight = deskew(slanted)
    for before, after in zip(slanted, straight, strict=True):
        mass, row, col, slope = ink_moments(after)
        assert mass == pytest.approx(ink_moments(before)[0], rel=0.02)  # ink moved, not lost
        assert abs(row - 14) < 0.1 and abs(col - 14) < 0.1 and abs(slope) < 0.02
    assert ink_moments(slanted[0])[3] > 0.5


def test_the_box_of_a_digit_surrounds_its_ink_evenly():
    page = np.full((200, 160), 235, np.uint8)
    page[30:150, 60:80] = 20  # ink in columns 60..79 and rows 30..149
    x0, y0, x1, y1 = prepare(page).box
    assert x0 <= 60 and y0 <= 30 and x1 >= 80 and y1 >= 150 and x1 - x0 <= 24 and y1 - y0 <= 124
    assert x0 + x1 == 60 + 80 and y0 + y1 == 30 + 150  # the soft edge is as wide on each side


def test_strokes_keep_the_digit_with_the_pieces_near_it_and_drop_specks_and_strays():
    page = np.full((240, 240), 230.0)
    page[60:180, 100:112] = 30  # the digit's main stroke: 120 x 12 px
    page[60:70, 118:160] = 30  # a flag beside it (a 5's), 4 px away: kept
    page[120:122, 116:118] = 30  # a speck as near, under 2% of the main stroke's ink: dropped
    page[100:140, 215:225] = 30  # a stroke far off (more than 0.6 x the digit's size away): dropped
    page[100:140, 162:170] = 30  # one 50 px off, within 0.6 x the digit's height of 120 px: kept
    for gray in (page, 255 - page):  # dark ink on light paper, and light on dark
        kept = strokes(find_ink(gray))
        assert kept[60:180, 100:112].all() and kept[60:70, 118:160].all() and kept[100:140, 162:170].all()
        assert not kept[120:122, 116:118].any() and not kept[:, 200:].any()
        assert not kept[:50].any() and not kept[190:].any()  # paper is never ink
    with pytest.raises(ImageError, match="no ink"):
        find_ink(np.full((240, 240), 230.0) + np.random.default_rng(0).normal(0, 2, (240, 240)))


def test_a_piece_is_near_by_the_digits_longer_side_whichever_way_it_lies():
    page = np.full((240, 300), 230.0)
    page[100:112, 60:180] = 30  # a wide digit, 120 x 12 px (a dash-like 1 lying down, or a long bar)
    page[150:190, 120:128] = 30  # 38 px below it, within 0.6 x its width: kept
    page[193:203, 120:128] = 30  # 81 px below, beyond 0.6 x 120 + 2 = 74 px (and soft edges): dropped
    kept = strokes(find_ink(page))
    assert kept[100:112, 60:180].all() and kept[150:190, 120:128].all() and not kept[193:203].any()


def test_ruled_lines_go_and_a_stroke_that_crosses_one_stays_whole():
    page = np.full((300, 300), 230.0)
    for row in range(40, 300, 40):
        page[row : row + 2, :] = 120  # ruled lines across the whole sheet
    page[:, 30:32] = 120  # a margin line down it
    page[20:22, 100:] = 120  # a line from mid-sheet to the right edge (it touches that side only)
    page[70:190, 150:158] = 30  # the digit: a stroke crossing the lines at rows 80, 120 and 160
    page[100:106, 120:200] = 30  # its bar, long and level but far from either side: not a line
    kept = strokes(find_ink(page))
    assert kept[70:190, 150:158].all()  # whole, where it crosses a line too
    assert kept[100:106, 120:200].all()
    assert not kept[80:82, :140].any() and not kept[80:82, 170:].any() and not kept[:, 30:32].any()
    assert not kept[20:22].any()
    # a line's ink only leaves where nothing crosses it: under a stroke that stands on it, it stays
    page[200:240, 240:246] = 30  # a stroke standing on the line at row 240 (a second digit: all_strokes)
    page[162:200, 260:266] = 30  # one hanging from the line at row 160
    page[258:270, :160] = 30  # a thick band from the left edge, too stout for a line (a desk's edge)
    every = all_strokes(find_ink(page))
    assert every[240:242, 240:246].all() and not every[240:242, 40:140].any()
    assert every[160:162, 260:266].all() and every[258:270, 5:160].all()


@pytest.mark.parametrize("shortcuts", [True, False])
def test_the_paper_statistics_match_their_definitions(shortcuts, monkeypatch):
    monkeypatch.setattr(ink_module, "SHORTCUTS", shortcuts)
    rng = np.random.default_rng(0)
    cases = [
        rng.normal(0, 3, 1001),
        np.concatenate([np.zeros(500), rng.uniform(1, 9, 500)]),  # half exactly 0: the middle straddles 0
        np.concatenate([np.zeros(501), rng.uniform(1, 9, 500)]),
        np.concatenate([-np.ones(3), np.zeros(10), np.ones(10)]),
        np.concatenate([-np.ones(12), np.zeros(10), np.ones(2)]),
        np.concatenate([np.zeros(300), np.ones(701)]),  # zeros, but not up to the middle
        np.concatenate([-np.ones(600), np.zeros(401)]),  # zeros, but the middle is below them
    ]
    for values in cases:
        assert ink_module._fast_median(values) == float(np.median(values))
    noise = rng.normal(0, 5, 200_000)
    assert ink_module._robust_std(noise) == pytest.approx(5, rel=0.03)  # 1.4826 x MAD estimates the std
    page = np.full((200, 200), 220.0) + rng.normal(0, 6, (200, 200))
    page[50:150, 95:105] = 40
    # the paper's noise, measured after a 3 x 3 mean: 6 / 3 = 2, and a little more from subtracting the
    # flattened paper (2.35 measured)
    assert 2 <= find_ink(page).noise <= 2.7


def test_a_shadow_across_the_page_is_paper_not_ink():
    page = np.full((400, 400), 225.0)
    page[:, :200] -= np.linspace(0, 110, 200)[::-1]  # light falling off to the left edge: a shadow
    page[140:260, 270:282] = 20
    kept = strokes(find_ink(page))
    assert kept[140:260, 270:282].all() and not kept[:, :240].any()


def test_a_tiny_faint_crop_is_read_not_found_blank(mnist):
    """A digit 12-16 px tall in faint ink (40 gray levels) on a crop of a few dozen px: its strokes are a pixel
    or two wide, which the 3×3 smoothing of ink finding averaged into the paper ('no ink found'). A broken
    version raises ImageError on most of them; a box off by the enlargement lands far outside the crop."""
    from digitlab.inference.realworld import _coverage, _noise, _sheet, stroke_mask

    rng = np.random.default_rng(3)
    correlations = []
    for digit in mnist.test.images[:12]:
        coverage = _coverage(stroke_mask(digit[0].numpy(), 1.0), int(rng.integers(12, 17)))
        page = _noise(_sheet(coverage, rng, margin=(1.2, 1.6), paper=210.0, ink=170.0), rng, 1.5)
        prepared = prepare(np.clip(page, 0, 255).astype(np.uint8))
        x0, y0, x1, y1 = prepared.box
        assert 0 <= x0 < x1 <= page.shape[1] and 0 <= y0 < y1 <= page.shape[0]
        correlations.append(np.corrcoef(prepared.image.flatten().float(), digit.flatten().float())[0, 1])
    assert np.median(correlations) > 0.7
    with pytest.raises(ImageError, match="no ink"):  # faint noise alone is still blank paper
        prepare(np.clip(rng.normal(210, 1.5, (30, 24)), 0, 255).astype(np.uint8))


def _neighbours(mask: np.ndarray) -> int:
    """How many digit-sized pieces digit_strokes finds beside the heaviest piece of `mask` (ink 100 everywhere)."""
    return digit_strokes(Ink(mask * 100.0, mask, 1.0))[1]


def _slanted(mask: np.ndarray, top: int, left: int, thick: int) -> None:
    """A stroke leaning right, 30 rows tall, 2 columns further right per row up: an italic 1 lying low."""
    for row in range(30):
        start = left + 2 * (29 - row)
        mask[top + row, start : start + thick] = True


def test_a_second_digit_beside_the_first_is_counted_and_pieces_of_one_digit_are_not():
    page = np.zeros((100, 260), bool)
    page[20:80, 20:50] = True  # the digit
    two = page.copy()
    two[25:80, 100:125] = True  # a second one beside it, apart
    assert _neighbours(page) == 0 and _neighbours(two) == 1
    three = two.copy()
    three[20:75, 170:200] = True
    # a broken overlap (`|` for the `-` of _shared: 50 | 100 = 118 columns "shared") counts none of them
    assert _neighbours(three) == 2
    for piece in (
        (slice(0, 15), slice(25, 70)),  # a flag lifted above the digit: not on its line
        (slice(70, 80), slice(60, 64)),  # a speck beside it: far under 30% of its ink
        (slice(65, 80), slice(100, 190)),  # a heavy dash beside it, under half its height
        (slice(65, 100), slice(100, 130)),  # tall enough, but sharing under half its rows (15 of 35)
    ):
        apart = page.copy()
        apart[piece] = True
        assert _neighbours(apart) == 0, piece


def test_slanted_digits_beside_each_other_may_share_a_fifth_of_their_columns():
    # the boxes of two leaning strokes overlap, the strokes do not: 11 of 66 columns shared (under 20%) is
    # beside; 19 is one digit's pieces. Measuring the 20% against the first's height (30 px, 6 columns)
    # instead of its width would call the first pair one digit.
    for offset, beside in ((56, 1), (48, 0)):
        pair = np.zeros((100, 200), bool)
        _slanted(pair, 30, 20, thick=9)  # the heavier: the digit
        _slanted(pair, 30, 20 + offset, thick=8)
        assert _neighbours(pair) == beside


def test_a_digit_near_the_pictures_edge_is_found():
    # only the outer 2% of the picture (4 px of 240) seeds no ink; a frame of 240 % 50 = 40 px would miss
    # a digit written 10 px from the edge and call the picture blank
    page = np.full((240, 240), 230.0)
    page[60:180, 10:22] = 30
    kept = strokes(find_ink(page))
    assert kept[60:180, 10:22].all() and kept.sum() <= 1.2 * 120 * 12


def test_a_long_stroke_that_reaches_neither_side_is_not_a_ruled_line():
    page = np.full((300, 300), 230.0)
    page[40:42, :] = 120  # a ruled line across the sheet: it reaches both sides and goes
    page[150:153, 40:260] = 30  # a long, thin stroke (220 x 3 px) 40 px from either side: it stays
    page[100:200, 150:156] = 30  # crossed by a stroke (a long-barred 7, a + sign)
    # a broken side test (`>=` for `<=` in touches_side: any line starting 5% in from the left "touches")
    # would take the long stroke for a line
    kept = strokes(find_ink(page))
    assert kept[150:153, 40:260].all() and kept[100:200, 150:156].all() and not kept[40:42].any()


def test_on_noisy_paper_ink_stands_two_noise_widths_above_it():
    # weak ink joins a stroke only above 2 x the paper's noise (0.5 x NOISE_SIGMAS): a faint halo 1.5 noise
    # widths over the paper around a stroke stays paper (17% of it is ink, from the noise's own peaks).
    # Without the noise's floor (0.12 x the strongest ink alone) 45% of the halo would be ink.
    rng = np.random.default_rng(0)
    page = 220 + rng.normal(0, 12, (200, 200))  # smoothed 3 x 3, the paper's noise is about 4 gray levels
    halo = np.zeros(page.shape, bool)
    halo[50:150, 80:120] = True
    halo[60:140, 94:106] = False
    page[60:140, 94:106] -= 32  # the stroke, 8 noise widths deep
    page[halo] -= 6
    ink = find_ink(page, flatten=False)
    assert ink.noise == pytest.approx(4, rel=0.1)
    assert ink.mask[60:140, 94:106].all() and ink.mask[halo].mean() < 0.3 and not ink.mask[:, :60].any()


def test_a_canvas_drawing_takes_the_drawing_path_and_an_mnist_sized_picture_does_not():
    canvas = np.zeros((280, 280), np.uint8)  # black canvas, white pen: a drawing
    canvas[60:220, 130:150] = 255
    assert as_drawing(Image.fromarray(canvas)) is not None
    small = np.zeros((28, 28), np.uint8)  # as drawn, but MNIST's size: it may be MNIST's layout already
    small[4:24, 12:16] = 255
    # a flipped size test (!= for ==) would send every canvas to the slow full pipeline and MNIST pictures
    # through the drawing path
    assert as_drawing(Image.fromarray(small)) is None
    assert as_drawing(Image.fromarray(canvas), PreprocessOptions(stroke=False)) is None


def test_mnist_field_fits_the_ink_wherever_it_lies_in_the_map():
    ink = np.zeros((60, 200), np.float32)
    ink[20:40, 30:90] = 1.0  # a wide bar, well left of the map's right edge
    field = mnist_field(ink)
    cols = np.nonzero(field.max(0) > 0.5)[0]
    # cropped to its ink, the bar's 60 columns fill 20; a crop reaching past the ink (to column 2 x 89 = 178)
    # would squeeze it into 8
    assert cols.max() - cols.min() + 1 in (19, 20, 21)
    assert np.allclose(field, mnist_field(ink[20:40, 30:90]))


def test_a_digits_crop_keeps_the_soft_edges_of_its_strokes_on_both_sides():
    keep = np.zeros((40, 40), bool)
    keep[5:35, 10:14] = keep[5:35, 24:28] = keep[31:35, 10:28] = True  # a U
    values = np.where(keep, 1.0, 0.0)
    values[ndimage.binary_dilation(keep, np.ones((3, 3))) & ~keep] = 0.5  # its soft edges, one pixel wide
    values[15:18, 18:20] = 1.0  # a speck inside it, apart from it: not the digit's
    crop, box = prepare_module._digit_crop(Ink(values.astype(np.float32), keep, 1.0), keep)
    assert box == (10, 5, 28, 35)
    # the inner edges of both arms stay (a dilation reaching one column to one side only would keep one):
    # the crop of a symmetric U is symmetric, and the speck is left out
    assert (crop[:26, 4] == 0.5).all() and np.array_equal(crop, crop[:, ::-1])
    assert not crop[10:13, 8:10].any()
