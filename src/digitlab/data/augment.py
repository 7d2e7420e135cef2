"""Batched augmentation on the device: random affine maps and elastic distortion, one call per batch.

Every function takes float images (B, C, H, W) and a torch.Generator, draws per-sample parameters,
and resamples the whole batch with one `grid_sample`. Digits are never flipped: rotations stay
within ±90°, scales are positive and shear stays within ±45°, so every map keeps its orientation
(positive determinant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms; all zero (scale 0) means the identity."""

    rotate: float = 0.0  # degrees, uniform in ±rotate
    translate: float = 0.0  # pixels, uniform in ±translate on each axis
    scale: float = 0.0  # relative, uniform in 1 ± scale
    shear: float = 0.0  # degrees, uniform in ±shear
    elastic_alpha: float = 0.0  # pixels: strength of the elastic displacement (0 = off)
    elastic_sigma: float = 4.0  # pixels: smoothness of the elastic field (Gaussian sigma)
    thickness: float = 0.0  # pen steps: strokes thinned by up to half a step or thickened by up to this many
    blur: float = 0.0  # pixels: Gaussian blur of sigma uniform in [0, blur]
    contrast: float = 0.0  # ink scaled by a factor uniform in [1 - contrast, 1]
    noise: float = 0.0  # Gaussian pixel noise of std uniform in [0, noise] (images in [0, 1])

    def __post_init__(self):
        from ..errors import ConfigError

        if not (
            0 <= self.rotate <= 90
            and 0 <= self.shear < 45
            and 0 <= self.scale < 1
            and self.translate >= 0
            and self.elastic_alpha >= 0
            and self.elastic_sigma > 0
            and 0 <= self.thickness <= 2
            and 0 <= self.blur <= 3
            and 0 <= self.contrast < 1
            and 0 <= self.noise <= 1
        ):
            raise ConfigError(
                f"augmentation out of range: {self} (rotate 0..90, shear 0..45, scale 0..1, "
                "translate, elastic alpha >= 0, sigma > 0, thickness 0..2, blur 0..3, "
                "contrast 0..1, noise 0..1)"
            )

    @property
    def geometric(self) -> bool:
        return any((self.rotate, self.translate, self.scale, self.shear, self.elastic_alpha))

    @property
    def photometric(self) -> bool:
        return any((self.thickness, self.blur, self.contrast, self.noise))

    @property
    def active(self) -> bool:
        return self.geometric or self.photometric


# The preset `--augment` turns on: mild, as handwriting varies (cf. Simard et al. 2003).
PRESET = AugmentConfig(rotate=10.0, translate=2.0, scale=0.1, shear=10.0, elastic_alpha=0.0)


def random_affine_matrices(
    count: int, config: AugmentConfig, size: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(count, 2, 3) matrices for `F.affine_grid`, mapping output to input coordinates in [-1, 1]."""

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(count, generator=generator) * 2 - 1) * limit

    angle = torch.deg2rad(uniform(config.rotate))
    shear = torch.deg2rad(uniform(config.shear))
    scale = 1 + uniform(config.scale)
    shift = torch.stack([uniform(config.translate), uniform(config.translate)], 1) * (2 / size)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # The forward map of the image is scale * rotation @ shear(x by y) = scale * [[a, b], [c, d]]
    # with a = cos, b = cos tan - sin, c = sin, d = sin tan + cos, whose determinant is 1;
    # affine_grid wants the inverse, written out (batched linalg.inv costs far more for 2x2).
    inverse = torch.stack(
        [torch.stack([sin * tan + cos, sin - cos * tan], 1), torch.stack([-sin, cos], 1)], 1
    ) / scale.view(-1, 1, 1)
    offset = -(inverse @ shift.unsqueeze(2))
    return torch.cat([inverse, offset], 2).to(device)


def elastic_field(
    count: int, size: int, alpha: float, sigma: float, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Smoothed random displacements (count, size, size, 2) in grid units (Simard et al. 2003).

    Uniform noise in [-1, 1] per pixel and axis, blurred by a Gaussian of `sigma` pixels,
    normalised to unit peak and scaled to `alpha` pixels.
    """
    noise = torch.rand(count * 2, 1, size, size, generator=generator) * 2 - 1
    radius = max(1, int(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    smooth = F.conv2d(noise, kernel.view(1, 1, 1, -1), padding=(0, radius))
    smooth = F.conv2d(smooth, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    smooth = smooth / smooth.abs().amax(dim=(2, 3), keepdim=True).clamp(min=1e-8)
    return (smooth.view(count, 2, size, size).permute(0, 2, 3, 1) * (alpha * 2 / size)).to(device)


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random affine (and elastic, if alpha > 0) resampling of float images (B, C, H, W), background 0;
    then the pen (thickness), the focus (blur), the ink's darkness (contrast) and sensor noise."""
    if config.geometric:
        images = _resample(images, config, generator)
    if config.thickness:
        images = pen_thickness(images, config.thickness, generator)
    if config.blur:
        images = gaussian_blur(images, _uniform(len(images), 0, config.blur, generator, images))
    if config.contrast:
        images = images * _uniform(len(images), 1 - config.contrast, 1, generator, images).view(-1, 1, 1, 1)
    if config.noise:
        std = _uniform(len(images), 0, config.noise, generator, images).view(-1, 1, 1, 1)
        noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
        images = (images + std * noise).clamp(0, 1)
    return images


def _uniform(count: int, low: float, high: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return (low + (high - low) * torch.rand(count, generator=generator)).to(like.device, like.dtype)


def pen_thickness(images: torch.Tensor, steps: float, generator: torch.Generator) -> torch.Tensor:
    """Strokes redrawn with a thinner or heavier pen: per image, a step t uniform in [-0.5, steps] blends
    towards the grey erosion (t < 0; at most half of it, as a full erosion wipes out thin strokes) or the
    grey dilation by one or two 3×3 max-pools (t > 0)."""
    step = _uniform(len(images), -0.5, steps, generator, images).view(-1, 1, 1, 1)
    eroded = -_max3(-images)
    dilated = _max3(images)
    thicker = _max3(dilated) if steps > 1 else dilated
    thin = images + (-step).clamp(0, 1) * (eroded - images)
    heavy = torch.where(
        step <= 1,
        images + step.clamp(0, 1) * (dilated - images),
        dilated + (step - 1).clamp(0, 1) * (thicker - dilated),
    )
    return torch.where(step < 0, thin, heavy)


def _max3(images: torch.Tensor) -> torch.Tensor:
    """3×3 grey dilation (edges padded with the border's value): two separable passes of shifted maxima,
    several times cheaper on a CPU than a stride-1 max_pool2d."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    rows = torch.maximum(torch.maximum(padded[..., :-2, :], padded[..., 1:-1, :]), padded[..., 2:, :])
    return torch.maximum(torch.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image (B, 1, H, W) blurred by its own Gaussian of std `sigma` (B,) pixels (5×5 taps, separable)."""
    taps = torch.arange(-2, 3, dtype=images.dtype, device=images.device)
    kernels = torch.exp(-(taps**2) / (2 * sigma.clamp(min=1e-3).view(-1, 1) ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)  # (B, 5)
    count, channels, height, width = images.shape
    stacked = images.reshape(1, count * channels, height, width)
    weights = kernels.repeat_interleave(channels, 0)
    stacked = F.conv2d(stacked, weights.view(-1, 1, 1, 5), padding=(0, 2), groups=count * channels)
    stacked = F.conv2d(stacked, weights.view(-1, 1, 5, 1), padding=(2, 0), groups=count * channels)
    return stacked.view(count, channels, height, width)


def _resample(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    count, _, height, width = images.shape
    theta = random_affine_matrices(count, config, width, generator, images.device).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if config.elastic_alpha:
        grid = grid + elastic_field(
            count, height, config.elastic_alpha, config.elastic_sigma, generator, images.device
        ).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def transform_batch(
    images: torch.Tensor, rotate: float = 0.0, shift: tuple[float, float] = (0.0, 0.0), scale: float = 1.0
) -> torch.Tensor:
    """One fixed transform for the whole batch (degrees, pixels (x, y), factor), for robustness tests."""
    count, _, _, width = images.shape
    angle = math.radians(rotate)
    forward = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
    inverse = torch.linalg.inv(forward)
    offset = -(inverse @ (torch.tensor(shift) * (2 / width)).view(2, 1))
    theta = torch.cat([inverse, offset], 1).expand(count, 2, 3).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
