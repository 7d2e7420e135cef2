"""Procedural digit styles (digitlab.inference.styles): the flagged 1 is drawn as MNIST lays out its digits."""

import torch

from digitlab.inference.styles import flagged_ones


def leftmost_column(mask: torch.Tensor) -> int:
    return int(mask.any(0).nonzero().min())


def test_flagged_ones_are_seeded_mnist_style_pictures_with_a_flag_to_the_left():
    ones = flagged_ones(100, seed=7)
    assert ones.shape == (100, 1, 28, 28) and ones.dtype == torch.uint8
    assert torch.equal(ones, flagged_ones(100, seed=7)) and not torch.equal(ones, flagged_ones(100, seed=8))
    pixels = ones[:, 0].double()
    index = torch.arange(28, dtype=torch.double)
    mass = pixels.sum((1, 2))
    rows, cols = (pixels.sum(2) * index).sum(1) / mass, (pixels.sum(1) * index).sum(1) / mass
    assert (rows - 14).abs().max() <= 1 and (cols - 14).abs().max() <= 1  # centred by mass, as MNIST
    # the flag: the top third's ink reaches further left than the stem's foot (a bare 1 or a 7's stem: it does not)
    reaches = []
    for mask in ones[:, 0] > 64:
        inked = mask.any(1).nonzero().flatten()
        top, bottom = int(inked.min()), int(inked.max()) + 1
        third = (bottom - top) // 3
        reaches.append(leftmost_column(mask[bottom - third : bottom]) - leftmost_column(mask[top : top + third]))
    assert (torch.tensor(reaches) >= 3).float().mean() >= 0.85
