"""Batched augmentation: identity is exact, nothing flips, per-sample draws differ, elastic stays local."""

import pytest
import torch

from digitlab.data.augment import (
    PRESET,
    AugmentConfig,
    augment_batch,
    gaussian_blur,
    pen_thickness,
    random_affine_matrices,
    transform_batch,
)
from digitlab.data.datasets import to_float
from digitlab.errors import ConfigError


def test_identity_parameters_return_the_input_unchanged(mnist):
    images = to_float(mnist.test.images[:64])
    assert augment_batch(images, AugmentConfig(), torch.Generator()) is images
    theta = random_affine_matrices(64, AugmentConfig(), 28, torch.Generator())
    assert torch.equal(theta, torch.eye(2, 3).expand(64, 2, 3))
    resampled = transform_batch(images, rotate=0, shift=(0, 0), scale=1.0)
    torch.testing.assert_close(resampled, images, rtol=0, atol=1e-5)


def test_no_draw_ever_flips_a_digit():
    config = AugmentConfig(rotate=90, translate=5, scale=0.9, shear=44)
    theta = random_affine_matrices(20_000, config, 28, torch.Generator().manual_seed(0))
    assert (torch.linalg.det(theta[:, :, :2]) > 0).all()


def test_a_quarter_turn_rotates_rather_than_mirrors():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 4:10, 4:24] = 1  # a bar near the top
    turned = transform_batch(image, rotate=90)
    top, bottom, left, right = (
        turned[0, 0, :14].sum(),
        turned[0, 0, 14:].sum(),
        turned[0, 0, :, :14].sum(),
        turned[0, 0, :, 14:].sum(),
    )
    assert abs(top - bottom) < 1 and abs(left - right) > 50  # the bar now runs vertically on one side


def test_each_sample_gets_its_own_draw_and_the_generator_decides(mnist):
    images = to_float(mnist.test.images[:1]).expand(8, 1, 28, 28)
    first = augment_batch(images, PRESET, torch.Generator().manual_seed(5))
    again = augment_batch(images, PRESET, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    assert all(not torch.equal(first[0], first[i]) for i in range(1, 8))


def test_elastic_distortion_moves_ink_a_little_and_keeps_it(mnist):
    images = to_float(mnist.test.images[:32])
    config = AugmentConfig(elastic_alpha=2.0, elastic_sigma=4.0)
    distorted = augment_batch(images, config, torch.Generator().manual_seed(0))
    assert distorted.shape == images.shape and not torch.equal(distorted, images)
    ink_ratio = distorted.sum((1, 2, 3)) / images.sum((1, 2, 3))
    assert ((ink_ratio > 0.6) & (ink_ratio < 1.5)).all() and 0.9 < ink_ratio.mean() < 1.1
    assert (distorted - images).abs().mean() < 0.1


def test_out_of_range_settings_are_refused():
    with pytest.raises(ConfigError, match="augmentation out of range"):
        AugmentConfig(rotate=120)
    with pytest.raises(ConfigError):
        AugmentConfig(scale=1.5)


# The robust recipe's photometric augmentations, each checked directly: which way it moves the ink, that
# strength 0 leaves a digit alone, and that the ink stays where it was (nothing moves, nothing mirrors).


def ink_centre(images: torch.Tensor) -> torch.Tensor:
    """(B, 2) centre of mass of each image's ink, in pixels (row, column)."""
    rows = torch.arange(images.shape[-2], dtype=images.dtype).view(-1, 1)
    columns = torch.arange(images.shape[-1], dtype=images.dtype).view(1, -1)
    mass = images.sum((1, 2, 3))
    return torch.stack([(images * rows).sum((1, 2, 3)) / mass, (images * columns).sum((1, 2, 3)) / mass], 1)


def the_draws(count: int, low: float, high: float, seed: int) -> torch.Tensor:
    """The per-image strengths augment.py draws first from a generator seeded with `seed`."""
    return low + (high - low) * torch.rand(count, generator=torch.Generator().manual_seed(seed))


def test_strength_zero_of_each_photometric_augmentation_is_the_identity(mnist):
    images = to_float(mnist.test.images[:16])
    for field in ("thickness", "blur", "contrast", "noise"):
        assert augment_batch(images, AugmentConfig(**{field: 0.0}), torch.Generator()) is images
    # and each one's own formula meets the identity as its strength goes to 0
    tiny = torch.full((16,), 1e-6)
    torch.testing.assert_close(gaussian_blur(images, tiny), images, rtol=0, atol=1e-6)
    for field in ("contrast", "noise"):
        faint = augment_batch(images, AugmentConfig(**{field: 1e-6}), torch.Generator().manual_seed(0))
        torch.testing.assert_close(faint, images, rtol=0, atol=1e-5)


def test_pen_thickness_thickens_for_positive_draws_and_thins_for_negative(mnist):
    images = to_float(mnist.test.images[:1]).expand(64, 1, 28, 28)  # one digit, 64 pens
    heavier = pen_thickness(images, 2.0, torch.Generator().manual_seed(3))
    steps = the_draws(64, -0.5, 2.0, seed=3)
    grows, shrinks = steps > 0, steps < 0
    assert grows.sum() > 40 and shrinks.sum() > 5  # the draw spans both ways
    assert (heavier[grows] >= images[grows] - 1e-6).all() and (heavier[shrinks] <= images[shrinks] + 1e-6).all()
    # more ink the larger the step: a pen that thickened at random or by a fixed amount breaks the order
    ratio = heavier.sum((1, 2, 3)) / images.sum((1, 2, 3))
    assert torch.equal(ratio.argsort(), steps.argsort())
    assert ratio.max() > 2 and ratio.min() < 0.9
    assert (ink_centre(heavier) - ink_centre(images)).abs().max() < 0.75  # strokes widen in place


def test_two_pen_steps_widen_a_one_pixel_stroke_to_five():
    stroke = torch.zeros(64, 1, 28, 28)
    stroke[..., 4:24, 14] = 1
    heavier = pen_thickness(stroke, 2.0, torch.Generator().manual_seed(0))
    steps = the_draws(64, -0.5, 2.0, seed=0)
    widths = (heavier[:, 0, 14] > 0.5).sum(1)  # pixels over half ink across the middle row
    expected = torch.where(steps > 1.5, 5, torch.where(steps > 0.5, 3, 1))
    assert torch.equal(widths, expected)


def test_blur_matches_scipys_gaussian_and_spreads_without_moving_ink(mnist):
    from scipy.ndimage import gaussian_filter

    images = to_float(mnist.test.images[:1]).expand(4, 1, 28, 28)
    sigma = torch.tensor([0.3, 0.8, 1.5, 3.0])
    blurred = gaussian_blur(images, sigma)
    for image, each, got in zip(images, sigma.tolist(), blurred, strict=True):
        # 5 taps: scipy's radius int(truncate * sigma + 0.5) = 2
        expected = gaussian_filter(image[0].double().numpy(), each, mode="constant", truncate=2 / each)
        torch.testing.assert_close(got[0].double(), torch.from_numpy(expected), rtol=0, atol=1e-5)
    peaks = blurred.amax((1, 2, 3))
    assert (peaks[1:] < peaks[:-1]).all()  # the larger sigma, the lower the peak
    assert (ink_centre(blurred) - ink_centre(images)).abs().max() < 0.1


def test_contrast_fades_ink_by_one_factor_per_image_within_its_range(mnist):
    images = to_float(mnist.test.images[:32])
    faded = augment_batch(images, AugmentConfig(contrast=0.4), torch.Generator().manual_seed(1))
    torch.testing.assert_close(faded, images * the_draws(32, 0.6, 1.0, seed=1).view(-1, 1, 1, 1))
    assert (faded <= images).all() and faded.amax((1, 2, 3)).min() < 0.7


def test_noise_has_the_drawn_spread_stays_in_range_and_keeps_the_digit(mnist):
    grey = torch.full((32, 1, 28, 28), 0.5)  # mid-grey: clamping to [0, 1] bites beyond 2.5 of the largest std
    noisy = augment_batch(grey, AugmentConfig(noise=0.2), torch.Generator().manual_seed(2))
    assert noisy.min() >= 0 and noisy.max() <= 1
    spread = the_draws(32, 0.0, 0.2, seed=2)
    measured = (noisy - grey).flatten(1).std(1)
    assert ((measured - spread).abs() < 0.1 * spread + 0.002).all()  # 784 pixels: within 3% of the std
    # the digit stays where it was, the right way round: each noisy image is closer to its own digit
    # than to that digit mirrored
    images = to_float(mnist.test.images[:32])
    noisy = augment_batch(images, AugmentConfig(noise=0.2), torch.Generator().manual_seed(2))
    flipped = images.flip(-1)
    assert ((noisy - images).square().sum((1, 2, 3)) < (noisy - flipped).square().sum((1, 2, 3))).all()
