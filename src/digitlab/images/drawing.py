"""A drawing (white strokes on a black pad, as the web page's canvas makes) to MNIST's 28×28, as batched tensor ops.

A drawing needs none of a photo's work (paper, lighting, ruled lines, specks): its background is exactly
black. What it does need is MNIST's layout: the ink's box, cropped, the pen's width brought to MNIST's, the
longer side fitted to 20 px and the centre of mass put at (14, 14) of 28×28. `Drawings` computes that for a
whole batch at once with torch operations that export to ONNX, so the server runs it on a micro-batch and
the exported web page runs the same graph in front of the model (digitlab.export.web): one implementation.

Which pictures take this path is exact (`drawing_pixels`): gray, opaque, at least half the pixels exactly
0 and no side beyond MAX_SIDE. Everything else is a photo or a scan and goes through preprocess.prepare's
full pipeline.

The steps, per picture (B, 1, H, W gray levels in [0, 255]):
1. the pad area-averaged over 2×2 pixels, and the box of its ink (a quarter of full ink on a pixel of the
   pad); none: blank (the answer is all zeros);
2. a square frame around it with a margin, at ZOOM px per output pixel (B, 1, 60, 60): bilinear samples,
   SUPERSAMPLE² of them averaged into each pixel;
3. the pen's width there: each stroke pixel's distance to the paper by repeated erosions (alternating a
   3×3 square and a cross, close to round), twice the mean on the ridge; within PEN_RANGE the soft strokes
   stay, a thinner pen is thickened and a heavier one thinned towards PEN_TARGET by distance thresholds;
4. the box of the result, its longer side sampled to 20·ZOOM px and area-averaged to 20 (MNIST's anti-aliasing);
5. pasted into 28×28 with its centre of mass at CENTRE (an exact integer shift), rounded to gray levels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

FIELD, BOX = 28, 20  # output side, and the side the digit's longer dimension is fitted into
CENTRE = 14.0  # where MNIST puts the centre of mass (row and column index; measured mean 14.0 ± 0.3)
PEN_RANGE = (1.6, 5.0)  # stroke widths (output px) left as they are: MNIST spans 1.8-3.6 (10th-90th percentile)
PEN_TARGET = 2.5  # ... at MNIST's median width
INK = 0.25  # a pixel at a quarter of full ink or more belongs to the digit's box
ZOOM = 2  # frame pixels per output pixel while the pen is measured and changed
MARGIN = 0.25  # paper added round the digit's square in the frame (of its side), room for a thickened pen
STEPS = 12  # erosions of the strokes at most: pens up to 2·STEPS frame px (12 output px) are measured
COARSE = 2  # the pad is read area-averaged over COARSE² pixels (its box found to COARSE px)
SUPERSAMPLE = 2  # samples per frame pixel and side, averaged: a pad of up to COARSE·SUPERSAMPLE·60 px without gaps
# erosions of the paper: a pen thinner than PEN_RANGE grows by at most this many frame px (see _with_mnist_pen)
THICKEN_STEPS = math.ceil(PEN_TARGET / (2 - 2 * PEN_TARGET / BOX) * ZOOM)
MAX_SIDE = 1024  # a larger picture is never taken for a drawing


def drawing_pixels(picture: Image.Image) -> np.ndarray | None:
    """The gray levels (H, W) uint8 of `picture` when it is a drawing, else None: a gray, opaque picture of no
    more than MAX_SIDE a side whose pixels are mostly exactly black (a canvas, not paper)."""
    if max(picture.size) > MAX_SIDE or picture.mode not in ("L", "LA", "RGB", "RGBA"):
        return None
    pixels = np.asarray(picture)
    if pixels.ndim == 3:
        if picture.mode.endswith("A") and pixels[..., -1].min() < 255:
            return None
        if (
            picture.mode.startswith("RGB")
            and not ((pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])).all()
        ):
            return None
        pixels = pixels[..., 0]
    if np.count_nonzero(pixels) * 2 > pixels.size:
        return None
    return pixels


def stack_drawings(drawings: list[np.ndarray]) -> torch.Tensor:
    """Drawings of any sizes as one batch (B, 1, H, W) float, each padded with black on the right and below
    (black is paper here, so the padding changes nothing)."""
    height, width = max(d.shape[0] for d in drawings), max(d.shape[1] for d in drawings)
    batch = np.zeros((len(drawings), 1, height, width), np.float32)
    for index, drawing in enumerate(drawings):
        batch[index, 0, : drawing.shape[0], : drawing.shape[1]] = drawing
    return torch.from_numpy(batch)


class Drawings(nn.Module):
    """Drawings (B, 1, H, W) gray levels in [0, 255] -> MNIST-style digits (B, 1, 28, 28) gray levels (whole
    numbers in [0, 255]; all zero for a blank drawing) and the ink's boxes (B, 4) x0, y0, x1, y1 in the
    drawing's pixels (x1, y1 exclusive)."""

    def forward(self, pads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ink = F.avg_pool2d(pads, COARSE) / 255  # the pad read once, area-averaged: a 1 px stroke still shows
        top, bottom, left, right = _box(ink > INK / COARSE)
        side = torch.maximum(bottom - top, right - left).clamp(min=1) * (1 + 2 * MARGIN)
        frame_side = int(BOX * ZOOM * (1 + 2 * MARGIN))
        fine = _sample(ink, (top + bottom) / 2, (left + right) / 2, side, frame_side * SUPERSAMPLE)
        frame = F.avg_pool2d(fine, SUPERSAMPLE)  # area-averaged, so no stroke falls between two samples
        strokes = _with_mnist_pen(frame)
        top2, bottom2, left2, right2 = _box(strokes > INK)
        side2 = torch.maximum(bottom2 - top2, right2 - left2).clamp(min=1)
        fitted = _sample(strokes, (top2 + bottom2) / 2, (left2 + right2) / 2, side2, BOX * ZOOM)
        digits = _centred(F.avg_pool2d(fitted, ZOOM).clamp(0, 1))
        blank = (bottom <= top).view(-1, 1, 1, 1)
        digits = torch.where(blank, torch.zeros_like(digits), torch.round(digits * 255))
        return digits, torch.stack([left, top, right, bottom], 1) * COARSE


def _box(mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The box of `mask` (B, 1, H, W) per picture: top, bottom, left, right (B,) float, bottom and right
    exclusive; bottom == top for an empty mask. First and last rows by argmax over index-weighted rows."""
    mask = mask.float()  # ONNX reduces numbers, not booleans
    rows, cols = mask.amax(3)[:, 0], mask.amax(2)[:, 0]  # (B, H), (B, W)
    return (*_ends(rows), *_ends(cols))


def _ends(lines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    count = lines.shape[1]
    index = torch.arange(count, dtype=lines.dtype, device=lines.device)
    first = torch.argmax(lines * (count - index), 1).to(lines.dtype)
    last = torch.argmax(lines * (index + 1), 1).to(lines.dtype)
    found = lines.amax(1) > 0
    return first, torch.where(found, last + 1, first)


def _sample(images: torch.Tensor, row: torch.Tensor, col: torch.Tensor, side: torch.Tensor, size: int) -> torch.Tensor:
    """The square of `side` px centred on (row, col) of each image (coordinates of pixel edges), sampled
    bilinearly into size × size (paper beyond the image)."""
    height, width = images.shape[2], images.shape[3]
    steps = (torch.arange(size, dtype=images.dtype, device=images.device) + 0.5) / size - 0.5  # (size,)
    rows = row.view(-1, 1) + side.view(-1, 1) * steps  # (B, size) centres of the samples, in image px
    cols = col.view(-1, 1) + side.view(-1, 1) * steps
    grid = torch.stack(
        [
            (2 * cols / width - 1).unsqueeze(1).expand(-1, size, size),
            (2 * rows / height - 1).unsqueeze(2).expand(-1, size, size),
        ],
        -1,
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _erode(mask: torch.Tensor, square: bool, beyond: float = 1.0) -> torch.Tensor:
    """The minimum over each pixel's 3×3 square or cross, `beyond` the frame's edge: one erosion of a mask
    (1.0/0.0; beyond the frame counts as inside, so only the mask's own edges erode). Minima of shifted
    slices, several times cheaper than a stride-1 pool."""
    padded = F.pad(mask, (1, 1, 1, 1), value=beyond)
    vertical = torch.minimum(torch.minimum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
    if square:
        return torch.minimum(torch.minimum(vertical[..., :-2], vertical[..., 1:-1]), vertical[..., 2:])
    horizontal = torch.minimum(torch.minimum(padded[..., 1:-1, :-2], padded[..., 1:-1, 1:-1]), padded[..., 1:-1, 2:])
    return torch.minimum(vertical[..., 1:-1], horizontal)


def _distances(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Each pixel's distance (frame px, 1 at the edge) to the other side of `mask` (1.0/0.0), up to steps + 1,
    counting how many alternating square and cross erosions it survives."""
    distance, current = mask, mask
    for step in range(steps):
        current = _erode(current, square=step % 2 == 0)
        distance = distance + current
    return distance


def _with_mnist_pen(frame: torch.Tensor) -> torch.Tensor:
    """The strokes of each frame (B, 1, S, S) in [0, 1] with MNIST's pen: as they are when the pen's width is
    within PEN_RANGE, else cut at half their ink and thinned or thickened so that, once fitted to 20 px again,
    the pen is PEN_TARGET wide. (Thinning by c output px each side also shortens the digit by 2c, which the
    second fit scales back up: pen - 2c = PEN_TARGET (BOX - 2c) / BOX gives c; thickening alike.)"""
    strokes = (frame > 0.5 * frame.amax((1, 2, 3), keepdim=True)).to(frame.dtype)
    inside = _distances(strokes, STEPS)
    outside = _distances(1 - strokes, THICKEN_STEPS)
    ridge = strokes * (inside >= -_erode(-inside, square=True, beyond=0.0)).to(frame.dtype)  # local maxima
    pen = 2 * (ridge * inside).sum((1, 2, 3)) / ridge.sum((1, 2, 3)).clamp(min=1) / ZOOM
    change = torch.round((pen - PEN_TARGET).abs() / (2 - 2 * PEN_TARGET / BOX) * ZOOM).view(-1, 1, 1, 1)  # frame px
    thinned = (inside > change).to(frame.dtype)
    thinned = torch.where(thinned.amax((1, 2, 3), keepdim=True) > 0, thinned, strokes)
    thickened = (outside <= change).to(frame.dtype)
    heavy, light = (pen > PEN_RANGE[1]).view(-1, 1, 1, 1), (pen < PEN_RANGE[0]).view(-1, 1, 1, 1)
    return torch.where(heavy, thinned, torch.where(light, thickened, frame))


def _centred(boxes: torch.Tensor) -> torch.Tensor:
    """Each BOX² digit (B, 1, 20, 20) pasted into FIELD² with its centre of mass at CENTRE: shifted by whole
    pixels (nearest-neighbour sampling at integer positions: an exact copy)."""
    count = boxes.shape[0]
    index = torch.arange(BOX, dtype=boxes.dtype, device=boxes.device)
    mass = boxes.sum((1, 2, 3)).clamp(min=1e-6)
    centre_row = (boxes[:, 0].sum(2) * index).sum(1) / mass
    centre_col = (boxes[:, 0].sum(1) * index).sum(1) / mass
    top, left = torch.round(CENTRE - centre_row), torch.round(CENTRE - centre_col)
    field = torch.arange(FIELD, dtype=boxes.dtype, device=boxes.device)
    rows = (field.view(1, -1) - top.view(-1, 1)) * 2 / (BOX - 1) - 1  # (B, 28) in align_corners=True units
    cols = (field.view(1, -1) - left.view(-1, 1)) * 2 / (BOX - 1) - 1
    grid = torch.stack(
        [cols.unsqueeze(1).expand(count, FIELD, FIELD), rows.unsqueeze(2).expand(count, FIELD, FIELD)], -1
    )
    return F.grid_sample(boxes, grid, mode="nearest", padding_mode="zeros", align_corners=True)
