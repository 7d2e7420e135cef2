"""Not a digit, as predict sees it: the non-digit suite and the learned judge on top of the Mahalanobis views.

The judge is checked on real data: taught on MNIST training digits against scribbles and Fashion-MNIST
training items, it must turn away most held-out non-digits (a judge that learned nothing turns away
about 1 - quantile of them, 0.5%) while its threshold accepts the share of validation digits it was
set for; then it must survive the model file unchanged, and a damaged judge must be refused.
"""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

import digitlab
from digitlab.errors import ConfigError, DataError, RunError
from digitlab.images.preprocess import decode_image, mnist_field, prepare
from digitlab.inference import rejection
from digitlab.inference.doodles import DOODLES
from digitlab.inference.nondigits import HANDWRITING, HERSHEY, KINDS, PHOTOS, render_nondigits
from digitlab.inference.ood import blank_noise, observe, random_strokes
from digitlab.inference.rejection import METHOD, LearnedDetector, fit_learned_detector
from digitlab.runs.run import load_model


@pytest.fixture(scope="module")
def judged(seed_run, mnist, fashion):
    """The seed run with a judge taught on training digits vs scribbles and training Fashion-MNIST items."""
    nondigits = torch.cat([random_strokes(3000, seed=1), fashion.train.images[:3000]])
    detector = fit_learned_detector(
        seed_run.model, seed_run.ood, mnist.train.images[:6000], nondigits, mnist.val.images[:2000], quantile=0.99
    )
    seed_run.model.ood = detector
    yield seed_run, detector
    seed_run.model.ood = detector.base


@pytest.fixture(scope="session")
def fashion():
    return digitlab.load_dataset("fashion-mnist")


def test_the_judge_turns_away_held_out_non_digits_and_keeps_the_digits_it_was_set_for(judged, mnist, fashion):
    run, detector = judged
    rejected = lambda images: detector.rejects(detector.score(observe(run.model, images))).double().mean()  # noqa: E731
    assert rejected(mnist.val.images[:2000]) == pytest.approx(0.01, abs=0.002)  # its threshold: the 0.99 quantile
    assert rejected(mnist.test.images[:2000]) <= 0.03
    assert rejected(fashion.test.images[:2000]) >= 0.97  # the base detector alone: about 0.9 on this run
    assert rejected(random_strokes(1000, seed=7)) >= 0.9  # unseen scribbles (the base alone: about 0.5)
    assert rejected(blank_noise(500, seed=7)) >= 0.9


def test_the_judge_round_trips_through_the_model_file(judged, mnist, tmp_path):
    run, detector = judged
    digitlab.runs.run.save_model(run.model, tmp_path / "judged.safetensors", preprocess=run.preprocess.to_dict())
    loaded = digitlab.load_run(tmp_path / "judged.safetensors")
    assert isinstance(loaded.ood, LearnedDetector) and loaded.ood.method == METHOD
    assert loaded.ood.threshold == detector.threshold
    images = mnist.test.images[:300]
    torch.testing.assert_close(
        loaded.ood.score(observe(loaded.model, images)), detector.score(observe(run.model, images))
    )
    answers = loaded.predict(images, errors="collect")
    assert [answer.rejected for answer in answers] == detector.rejects(
        detector.score(observe(run.model, images))
    ).tolist()


def test_a_damaged_judge_is_refused(judged, tmp_path):
    run, _ = judged
    path = tmp_path / "judged.safetensors"
    digitlab.runs.run.save_model(run.model, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    broken = {key: value for key, value in tensors.items() if key != "ood.judge.out.weight"}
    save_file(broken, str(tmp_path / "broken.safetensors"), metadata=metadata)
    with pytest.raises(RunError, match="not-a-digit judge"):
        load_model(tmp_path / "broken.safetensors")


@pytest.mark.fonts
def test_the_suite_is_fixed_by_its_part_and_covers_every_kind(mnist, fashion):
    first = list(render_nondigits("val", 3, mnist.val, fashion.val))
    again = list(render_nondigits("val", 3, mnist.val, fashion.val))
    assert [picture.data for picture in first] == [picture.data for picture in again]
    assert [picture.kind for picture in first] == [kind for kind in KINDS for _ in range(3)]
    test = list(render_nondigits("test", 3, mnist.test, fashion.test))
    assert not {picture.data for picture in first} & {picture.data for picture in test}
    for picture in first:
        assert decode_image(picture.data, picture.kind).size[0] >= 28  # every picture is a readable file


def test_the_parts_share_no_font_and_no_photograph():
    for table in (HERSHEY, HANDWRITING, PHOTOS):
        for part, other in (("train", "val"), ("train", "test"), ("val", "test")):
            assert not set(table[part]) & set(table[other]), (table, part, other)


def test_every_doodle_draws_strokes_inside_its_box():
    rng = np.random.default_rng(0)
    for name, draw in DOODLES.items():
        strokes = draw(rng)
        assert strokes and all(stroke.ndim == 2 and stroke.shape[1] == 2 and len(stroke) >= 2 for stroke in strokes)
        assert np.isfinite(np.concatenate(strokes)).all(), name


def test_mnist_field_lays_ink_out_as_mnist_does():
    ink = np.zeros((100, 50), np.float32)
    ink[10:90, 20:30] = 1.0  # a tall bar, off-centre
    field = mnist_field(ink)
    rows = np.nonzero(field > 0.5)[0]
    assert field.shape == (28, 28) and rows.max() - rows.min() + 1 in (19, 20, 21)  # the longer side fitted to 20
    mass = field.sum()
    assert abs((field.sum(1) * np.arange(28)).sum() / mass - 14) <= 0.5
    assert abs((field.sum(0) * np.arange(28)).sum() / mass - 14) <= 0.5


def test_an_unknown_part_is_a_data_error(mnist, fashion):
    with pytest.raises(DataError, match="unknown part 'nope'"):
        next(render_nondigits("nope", 1, mnist.val, fashion.val))


@pytest.mark.fonts
def test_evaluate_non_digits_scores_every_kind_from_the_cli(seed_run, capsys):
    from digitlab.cli import main

    assert main(["evaluate", str(seed_run.path), "--non-digits", "--part", "val", "--count", "2", "--json"]) == 0
    scores = __import__("json").loads(capsys.readouterr().out)["non_digits"]
    assert scores["part"] == "val" and set(scores["kinds"]) == set(KINDS)
    assert all(kind["count"] == 2 and 0 <= kind["turned_away"] <= 1 for kind in scores["kinds"].values())


@pytest.mark.parametrize("quantile", [0.3, 0.49, 1.0, 1.5])
def test_a_quantile_outside_half_to_one_or_a_missing_set_is_refused(seed_run, quantile):
    some = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(ConfigError, match=f"quantile must be in \\[0.5, 1\\), got {quantile}"):
        fit_learned_detector(seed_run.model, seed_run.ood, some, some, some, quantile=quantile)
    with pytest.raises(ConfigError, match="needs digits, non-digits and validation digits"):
        fit_learned_detector(seed_run.model, seed_run.ood, some, some[:0], some)


def _page(*digits: np.ndarray, gap: int = 40) -> Image.Image:
    """MNIST digits (28×28, ink bright) written dark on light paper, 4× their size, `gap` px apart on one line."""
    page = Image.new("L", (60 + len(digits) * (112 + gap), 200), 235)
    for number, digit in enumerate(digits):
        ink = Image.fromarray(255 - digit).resize((112, 112), Image.Resampling.BILINEAR)
        page.paste(ink, (30 + number * (112 + gap), 44), Image.fromarray(digit).resize((112, 112)))
    return page


def test_digits_side_by_side_are_not_one_digit_and_the_answer_says_why(seed_run, mnist):
    first, second, third = (mnist.test.images[index, 0].numpy() for index in (0, 1, 3))  # a 7, a 2 and a 0
    assert prepare(_page(first, second)).neighbours == 1
    assert prepare(_page(first, second, third)).neighbours == 2
    assert prepare(_page(first)).neighbours == 0
    pair, single = seed_run.predict([_page(first, second), _page(first)])
    assert pair.rejected and "not one digit: 2 digit-sized marks" in pair.rejection
    assert pair.to_dict()["reason"] == pair.rejection
    assert single.label == "7" and not single.rejected and single.to_dict()["reason"] is None


def test_the_pieces_of_one_digit_are_not_neighbours():
    page = Image.new("L", (300, 300), 235)
    pen = ImageDraw.Draw(page)
    pen.line([(120, 120), (110, 200), (160, 190), (185, 230), (150, 270), (105, 260)], fill=20, width=10)  # a 5's body
    pen.line([(125, 80), (200, 80)], fill=20, width=10)  # its flag, lifted off the page above it
    pen.ellipse([(230, 240), (238, 248)], fill=20)  # a speck beside it
    assert prepare(page).neighbours == 0
    broken_four = Image.new("L", (300, 300), 235)
    pen = ImageDraw.Draw(broken_four)
    pen.line([(100, 60), (80, 170), (170, 170)], fill=20, width=10)
    pen.line([(160, 80), (165, 260)], fill=20, width=10)  # the bar crosses the stroke's end: one piece
    assert prepare(broken_four).neighbours == 0


def test_the_judge_sees_the_base_views_as_the_base_scores_them(seed_run, mnist):
    # the judge's first three features are the base detector's views standardised as the base does it, so
    # they sum to the base's own score; views shifted by their spread, or floor-divided by their centre,
    # would not (the judge's second standardisation hides a shift from every other test)
    base = getattr(seed_run.ood, "base", seed_run.ood)  # an earlier test may have taught the run a judge
    seen = observe(seed_run.model, mnist.val.images[:64])
    views = rejection._raw_features(base, seen)[:, :3]
    assert torch.allclose(views.double().sum(1), base.score(seen), atol=1e-4)
