"""Batched augmentation: identity is exact, nothing flips, per-sample draws differ, elastic stays local."""

import pytest
import torch

from digitlab.data.augment import PRESET, AugmentConfig, augment_batch, random_affine_matrices, transform_batch
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
