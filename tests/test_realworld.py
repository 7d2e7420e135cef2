"""The real-world suite and the preprocessing steps that read it: each step tested on its own."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.cli import main
from digitlab.config import PreprocessOptions
from digitlab.errors import ConfigError, ImageError
from digitlab.images.preprocess import decode_image, deskew, prepare, preprocess_image
from digitlab.inference.realworld import CONDITIONS, read_suite, render_suite, stroke_mask, suite_accuracy

LEGACY = PreprocessOptions(legacy=True)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().float(), b.flatten().float())[0, 1])


@pytest.fixture(scope="module")
def suite(mnist):
    """Ten pictures per condition, rendered from validation digits."""
    return list(render_suite(mnist.val.images, mnist.val.labels, count=10, seed=3))


@pytest.mark.slow
def test_the_suite_is_fixed_by_its_seed_and_covers_every_condition(mnist, suite):
    again = list(render_suite(mnist.val.images, mnist.val.labels, count=10, seed=3))
    assert [sample.data for sample in again] == [sample.data for sample in suite]
    other = list(render_suite(mnist.val.images, mnist.val.labels, count=10, seed=4))
    assert [sample.data for sample in other] != [sample.data for sample in suite]
    assert [sample.condition for sample in suite] == [name for name in CONDITIONS for _ in range(10)]
    canvas = next(sample for sample in suite if sample.condition == "canvas")
    assert Image.open(io.BytesIO(canvas.data)).size == (280, 280)  # as the web page's pad sends it
    only = list(render_suite(mnist.val.images, mnist.val.labels, count=10, seed=3, conditions=("slant",)))
    assert [sample.data for sample in only] == [sample.data for sample in suite if sample.condition == "slant"]


def test_pen_width_changes_the_strokes_not_the_digit(mnist):
    digit = mnist.val.images[0, 0].numpy()
    thin, plain, heavy = (stroke_mask(digit, width).sum() for width in (0.5, 1.0, 2.0))
    assert thin < 0.75 * plain and heavy > 1.5 * plain


def test_todays_pipeline_reads_the_suite_far_better_than_digitlab_0_1s(seed_run, suite):
    current = suite_accuracy(seed_run.model, read_suite(suite, PreprocessOptions()))
    legacy = suite_accuracy(seed_run.model, read_suite(suite, LEGACY))
    print(
        f"\nseed MLP on 110 suite pictures: {current['overall']:.1%} now, {legacy['overall']:.1%} with 0.1's pipeline"
    )
    assert current["overall"] >= legacy["overall"] + 0.05
    assert sum(current["refused"].values()) <= 1 < sum(legacy["refused"].values())


def page(digit: np.ndarray, paper: float = 220, ink: float = 40, side: int = 200) -> np.ndarray:
    """A digit as dark ink on a plain page, the digit `side` px tall in a page twice as large."""
    coverage = np.asarray(
        Image.fromarray(digit.astype(np.float32) / 255).resize((side, side), Image.Resampling.BICUBIC)
    )
    picture = np.full((2 * side, 2 * side), paper, np.float32)
    region = picture[side // 2 : side // 2 + side, side // 2 : side // 2 + side]
    region[...] = region * (1 - coverage.clip(0, 1)) + ink * coverage.clip(0, 1)
    return picture


def test_flattening_reads_a_digit_under_a_shadow(mnist):
    digit = mnist.val.images[7, 0]
    clean = preprocess_image(page(digit.numpy()))
    rows = np.arange(400, dtype=np.float32)[:, None]
    shadowed = page(digit.numpy()) * np.where(rows < 170, 0.45, 1.0) * np.linspace(1.0, 0.8, 400)[None, :]
    assert correlation(preprocess_image(shadowed), clean) > 0.8
    try:  # without flattening the shadow itself is taken for ink
        unflattened = correlation(preprocess_image(shadowed, PreprocessOptions(flatten=False)), clean)
    except ImageError:
        unflattened = 0.0
    assert unflattened < 0.5


def test_cleaning_drops_ruled_lines_and_specks(mnist):
    digit = mnist.val.images[11, 0].numpy()
    plain = page(digit)
    ruled = plain.copy()
    ruled[::45, :] = 150  # ruled paper, one-pixel lines every 45 px
    ruled[:, 30:32] = 120  # a margin line
    ruled[5:8, 380:383] = 30  # dust
    expected = preprocess_image(plain)
    assert correlation(preprocess_image(ruled), expected) > 0.9
    assert correlation(preprocess_image(ruled, PreprocessOptions(clean=False)), expected) < 0.8


def test_a_thin_pen_comes_out_at_full_intensity_and_mnist_width(mnist):
    digit = mnist.val.images[4, 0].numpy()
    mask = stroke_mask(digit, 0.35)  # a fine pen: about a third of MNIST's stroke
    thin = 230 - 200 * np.asarray(Image.fromarray(mask).resize((400, 400), Image.Resampling.BOX))
    redrawn = preprocess_image(thin)
    kept = preprocess_image(thin, PreprocessOptions(stroke=False))
    assert redrawn.max() == 255 and (redrawn > 127).sum() > 1.4 * (kept > 127).sum()
    assert correlation(redrawn, preprocess_image(digit)) > correlation(kept, preprocess_image(digit))


def test_faint_pencil_on_grey_paper_is_read_and_a_blank_grey_page_is_not(mnist):
    digit = mnist.val.images[2, 0].numpy()
    rng = np.random.default_rng(0)
    pencil = page(digit, paper=140, ink=118) + rng.normal(0, 3, (400, 400))
    assert correlation(preprocess_image(pencil), preprocess_image(digit)) > 0.8
    blank = np.full((400, 400), 140.0) * np.linspace(0.85, 1.0, 400)[None, :] + rng.normal(0, 3, (400, 400))
    with pytest.raises(ImageError, match="no ink found"):
        preprocess_image(blank)


def test_deskew_straightens_a_slanted_digit_and_keeps_an_upright_one(mnist):
    from digitlab.data.augment import transform_batch
    from digitlab.data.datasets import to_float

    digits = to_float(mnist.val.images[:32])
    straight = deskew(digits)
    assert straight.shape == digits.shape
    upright = deskew(straight)
    assert (upright - straight).abs().mean() < 0.02  # a deskewed digit stays as it is
    slanted = transform_batch(digits, rotate=15)
    slopes = [_slope(image) for image in deskew(slanted)]
    assert max(map(abs, slopes)) < 0.05 < np.mean([abs(_slope(image)) for image in slanted])
    single = torch.stack([deskew(image[None])[0] for image in digits[:4]])
    torch.testing.assert_close(single, straight[:4])  # batched = one at a time


def _slope(image: torch.Tensor) -> float:
    pixels = image[0].double()
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = pixels.sum()
    row, col = (pixels * rows).sum() / mass, (pixels * cols).sum() / mass
    return float((pixels * (rows - row) * (cols - col)).sum() / (pixels * (rows - row) ** 2).sum())


def test_preprocessing_is_idempotent_on_its_own_output(suite):
    for sample in suite[::3]:
        seen = prepare(decode_image(sample.data))
        again = prepare(Image.fromarray(seen.image[0].numpy()))
        assert torch.equal(again.image, seen.image)


def test_boxes_are_in_the_pictures_own_pixels(mnist, tmp_path):
    picture = np.full((600, 900), 230, np.uint8)
    picture[100:200, 500:560] = 20  # a thick "1", 60 × 100 px at x 500, y 100
    found = prepare(picture)
    assert found.box == pytest.approx((500, 100, 560, 200), abs=3)
    photo = Image.fromarray(np.kron(picture, np.ones((4, 4), np.uint8)))  # 3600 × 2400: JPEG decoded reduced
    path = tmp_path / "big.jpg"
    photo.save(path, quality=90)
    from digitlab.images.preprocess import load_image

    assert prepare(load_image(path)).box == pytest.approx((2000, 400, 2240, 800), abs=12)


def test_preprocessing_options_parse_and_refuse_unknown_steps():
    options = PreprocessOptions().with_steps("no-clean, deskew")
    assert not options.clean and options.deskew and options.flatten
    assert PreprocessOptions.from_dict(options.to_dict()) == options
    with pytest.raises(ConfigError, match="unknown preprocessing step 'sharpen'"):
        PreprocessOptions().with_steps("sharpen")


@pytest.mark.slow
def test_evaluate_real_world_scores_each_condition_and_writes_metrics(seed_run, capsys):
    assert main(["evaluate", str(seed_run.path), "--real-world", "--part", "val", "--count", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["real_world"]
    assert set(printed["conditions"]) == set(CONDITIONS) and printed["images"] == 44 and printed["part"] == "val"
    saved = json.loads((seed_run.path / "metrics.json").read_text())["real_world"]["val"]
    assert saved["conditions"] == printed["conditions"] and 0.5 < saved["overall"] <= 1
    assert main(["evaluate", str(seed_run.path), "--real-world", "--count", "2"]) == 0
    table = capsys.readouterr().out
    assert "real-world suite (22 pictures from test digits)" in table and "thin-pen" in table


def test_a_model_trained_deskewed_records_it_and_reads_pictures_deskewed(mnist, tmp_path):
    import digitlab

    config = digitlab.TrainConfig(epochs=1, lr=5e-3, train_size=5000, preprocess="deskew", out=str(tmp_path / "run"))
    run = digitlab.train(config, dataset=mnist)
    loaded = digitlab.load_run(tmp_path / "run")
    assert loaded.preprocess.deskew and run.preprocess == loaded.preprocess
    assert run.metrics["test_accuracy"] > 0.85  # tested on deskewed test digits, as it was trained
    picture = mnist.test.images[0, 0].numpy()
    seen = loaded.predict([picture])[0].image
    assert torch.equal(seen, preprocess_image(picture, PreprocessOptions(deskew=True)))
