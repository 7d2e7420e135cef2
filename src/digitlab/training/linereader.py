"""Training the line reader (digitlab.models.linereader) with CTC on lines of numbers composed of MNIST digits.

Each line is made as `predict --number` makes one from a photo: a number of 1-10 digits of one
split laid on paper (`numbers.compose_number`, a share `touching` of them with touching neighbours, a
share `long` of them LONGEST digits long), sometimes shrunk or turned a little, its writing found
(`numbers.find_writing`) and turned into the reader's input (`numbers.writing_line`). `photo_lines`
makes lines from the number suite's phone photos instead (numbersuite.render_numbers: dark areas,
slanted lines, ten small digits; JPEG), about 7× the cost of a composed line. The training lines come
from the training digits, the validation lines from the validation digits, so model selection never
sees the test split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..config import PreprocessOptions
from ..data.datasets import Split
from ..errors import ImageError
from ..images.preprocess import EncodedPicture, read_picture
from ..inference.linereader import decode, read_line
from ..inference.numbers import compose_number, find_writing, writing_line
from ..inference.numbersuite import render_numbers
from ..models.linereader import BLANK, STRIDE
from ..models.nets import create_model

LONGEST = 10  # digits in the longest training number


@dataclass
class Lines:
    """Line pictures, uint8 (LINE_HEIGHT, W) each (ink 255), and the digits written on each."""

    pictures: list[np.ndarray]
    targets: list[list[int]]

    def __len__(self) -> int:
        return len(self.pictures)


def make_lines(
    split: Split,
    count: int,
    seed: int = 0,
    options: PreprocessOptions = PreprocessOptions(),
    touching: float = 0.5,
    long: float = 0.0,
) -> Lines:
    """`count` lines of numbers of 1-LONGEST digits of `split`, a share `touching` of them with touching
    neighbours and a share `long` of them LONGEST digits long (see the module docstring); a number whose
    writing is not found is skipped."""
    rng = np.random.default_rng(seed)
    images, labels = split.images[:, 0].numpy(), split.labels.numpy()
    lines = Lines([], [])
    while len(lines) < count:
        length = LONGEST if long and rng.random() < long else int(rng.integers(1, LONGEST + 1))
        picks = rng.integers(0, len(labels), length)
        page, _ = compose_number(images[picks], rng, touching=bool(rng.random() < touching))
        _add_line(lines, _varied(page, rng), labels[picks], options)
    return lines


def photo_lines(split: Split, count: int, seed: int = 0, options: PreprocessOptions = PreprocessOptions()) -> Lines:
    """Lines from `count` of the number suite's photos of each of its classes (numbersuite.render_numbers),
    made of `split`'s digits and read from their JPEG bytes as `predict --number` reads a file."""
    lines = Lines([], [])
    for photo in render_numbers(split, count, seed):
        picture = read_picture(EncodedPicture(f"{photo.kind}.jpg", photo.data))
        _add_line(lines, picture, [int(digit) for digit in photo.truth], options)
    return lines


def _add_line(lines: Lines, picture, digits, options: PreprocessOptions) -> None:
    """The line of writing in `picture` added to `lines` with its `digits`; nothing if no writing is found."""
    try:
        writing = find_writing(picture, options)
        line = writing_line(writing.ink, writing.mask)[0]
    except ImageError:
        return
    lines.pictures.append(np.rint(line.picture * 255).astype(np.uint8))
    lines.targets.append([int(digit) for digit in digits])


def _varied(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The page sometimes shrunk (small digits in a photo) and sometimes turned a few degrees (a slanted line
    levelled not quite exactly)."""
    picture = Image.fromarray(page)
    if rng.random() < 0.4:
        factor = rng.uniform(0.3, 1.0)
        size = (max(8, round(page.shape[1] * factor)), max(8, round(page.shape[0] * factor)))
        picture = picture.resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.4:
        paper = int(np.median(page))
        picture = picture.rotate(rng.uniform(-4, 4), Image.Resampling.BILINEAR, expand=True, fillcolor=paper)
    return np.asarray(picture)


def batches(lines: Lines, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Index batches of lines of similar width (less padding): shuffled, then sorted by width within chunks
    of 32 batches, the batches in random order; without `rng`, in order of width."""
    widths = np.array([picture.shape[1] for picture in lines.pictures])
    if rng is None:
        order = np.argsort(widths, kind="stable")
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    order = rng.permutation(len(lines))
    chunk = 32 * batch_size
    order = np.concatenate(
        [part[np.argsort(widths[part])] for part in np.split(order, range(chunk, len(order), chunk))]
    )
    found = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [found[number] for number in rng.permutation(len(found))]


def padded(lines: Lines, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's pictures as float (B, 1, LINE_HEIGHT, widest) in [0, 1], and each one's frames."""
    widest = max(lines.pictures[i].shape[1] for i in batch)
    stacked = np.zeros((len(batch), 1, lines.pictures[batch[0]].shape[0], widest), np.uint8)
    for row, i in enumerate(batch):
        stacked[row, 0, :, : lines.pictures[i].shape[1]] = lines.pictures[i]
    frames = torch.tensor([lines.pictures[i].shape[1] // STRIDE for i in batch])
    return torch.from_numpy(stacked).float() / 255, frames


def augmented(
    pictures: torch.Tensor, frames: torch.Tensor, generator: torch.Generator, stretch: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch with pens varied: a quarter thickened by a pixel, a sixth thinned, the ink's level and some
    noise varied, and with `stretch`, the whole batch's lines stretched or squeezed by a factor within
    1 ± stretch (digits wider or narrower, closer or further apart); with each line's frames after the
    stretch (all batched tensor operations)."""
    count = len(pictures)
    if stretch:
        factor = 1 + stretch * (2 * float(torch.rand(1, generator=generator)) - 1)
        before, width = pictures.shape[-1], max(STRIDE, round(pictures.shape[-1] * factor / STRIDE) * STRIDE)
        pictures = F.interpolate(pictures, size=(pictures.shape[-2], width), mode="bilinear", align_corners=False)
        frames = (frames * width // before).clamp(1, width // STRIDE)
    draw = torch.rand(count, 1, 1, 1, generator=generator)
    thick = F.max_pool2d(pictures, 3, 1, 1)
    thin = -F.max_pool2d(-pictures, (1, 2), 1, (0, 0))
    thin = F.pad(thin, (0, 1))
    pictures = torch.where(draw < 0.25, thick, torch.where(draw > 5 / 6, thin, pictures))
    level = 0.7 + 0.3 * torch.rand(count, 1, 1, 1, generator=generator)
    noise = 0.03 * torch.randn(pictures.shape, generator=generator)
    return (pictures * level + noise).clamp(0, 1), frames


def learning_rate(step: int, steps: int, peak: float) -> float:
    """A short linear warm-up to `peak`, then a cosine down to zero."""
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def train_line_reader(
    train: Lines,
    val: Lines,
    epochs: int = 6,
    batch_size: int = 64,
    peak: float = 3e-3,
    seed: int = 0,
    report: Callable[[dict], None] | None = None,
    model: nn.Module | None = None,
    stretch: float = 0.0,
) -> tuple[nn.Module, list[dict]]:
    """Train a line reader with CTC (`model`, or a new plain one; lines stretched by up to `stretch`, see
    `augmented`); returns the model of the epoch best on `val` (lines read exactly) and the history, one
    dict per epoch."""
    torch.manual_seed(seed)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    model = model if model is not None else create_model("line-reader")
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=1e-4)
    steps = epochs * len(batches(train, batch_size, None))
    step, history = 0, []
    best: tuple[float, dict[str, torch.Tensor]] = (-1.0, {})
    for epoch in range(epochs):
        model.train()
        started, losses = time.perf_counter(), []
        for batch in batches(train, batch_size, rng):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps, peak)
            pictures, frames = augmented(*padded(train, batch), generator, stretch)
            log_probs = model(pictures).log_softmax(1).permute(2, 0, 1)  # (T, B, 11)
            targets = [train.targets[i] for i in batch]
            loss = F.ctc_loss(
                log_probs,
                torch.tensor([digit for target in targets for digit in target]),
                frames,
                torch.tensor([len(target) for target in targets]),
                blank=BLANK,
                zero_infinity=True,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
        exact = read_exactly(model, val)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "val_exact": exact,
                "seconds": time.perf_counter() - started,
            }
        )
        if exact > best[0]:
            best = (exact, {name: tensor.clone() for name, tensor in model.state_dict().items()})
        if report:
            report(history[-1])
    model.load_state_dict(best[1])  # the best epoch's weights
    return model.eval(), history


@torch.no_grad()
def read_exactly(model: nn.Module, lines: Lines, batch_size: int = 256) -> float:
    """The share of `lines` the model reads exactly (greedy CTC decoding)."""
    model.eval()
    right = 0
    for batch in batches(lines, batch_size, None):
        pictures, frames = padded(lines, batch)
        probabilities = model(pictures).softmax(1).numpy()
        for row, i in enumerate(batch):
            read = [digit for digit, *_ in decode(probabilities[row, :, : frames[row]])]
            right += read == lines.targets[i]
    return right / len(lines)


@torch.no_grad()
def measure_read_shift(reader: nn.Module, split: Split, count: int = 300, seed: int = 2) -> float:
    """How far right of the centre of the frames a digit is read in its ink's centre lies, in the digits'
    heights (the median over the digits of `count` clean numbers of 2-8 digits of `split` whose count the
    reader gets right): `numbers._line_parts` places the digits it reads by it, so it is measured for each
    reader and stored with it (READ_SHIFT in its file's `reading` metadata)."""
    rng = np.random.default_rng(seed)
    images, labels = split.images[:, 0].numpy(), split.labels.numpy()
    shifts: list[float] = []
    for _ in range(count):
        page, boxes = compose_number(images[rng.integers(0, len(labels), int(rng.integers(2, 9)))], rng)
        try:
            writing = find_writing(page)
            line, _, groups = writing_line(writing.ink, writing.mask)
        except ImageError:
            continue
        found = read_line(reader, line)
        if writing.tilt or len(found) != len(boxes):
            continue
        height = float(np.median([group.height for group in groups]))
        for digit, box in zip(found, boxes, strict=True):
            centre = ((box[0] + box[2]) / 2 - writing.corner[0]) / writing.scale
            shifts.append((centre - sum(digit.columns) / 2) / height)
    if not shifts:
        raise ImageError("no number's digits were counted right: the reader cannot be placed")
    return float(np.median(shifts))
