"""A reader of a whole line of digits that never cuts it: a small CNN over the line, trained with CTC.

The line is a float picture (B, 1, LINE_HEIGHT, W) of white ink on black, its ink rows scaled to
about 24 px (digitlab.inference.linereader.line_image). Four 3×3 convolution blocks halve the
height four times and the width twice, so each output frame sees a column 4 px wide of the line
(and, through the convolutions, ±~20 px around it, about a digit); two 1-D convolutions along the
line then read each frame with its neighbours. The output is logits (B, 11, W / 4) per frame: the
digits 0-9 and BLANK, CTC's "no new digit here" (Graves et al. 2006; as in Zhan et al. 2018 for
handwritten digit strings).
"""

from __future__ import annotations

import torch
from torch import nn

from .nets import register_model

LINE_HEIGHT = 32  # px: the height of a line picture
STRIDE = 4  # px of the line per output frame
BLANK = 10  # CTC's blank; the digits keep their own indices


def _block(in_channels: int, out_channels: int, pool: tuple[int, int]) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(pool),
    ]


@register_model("line-reader", trainable=False)
class LineReader(nn.Module):
    """Logits (B, 11, W // STRIDE) per frame for lines (B, 1, LINE_HEIGHT, W); see the module docstring."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 64), hidden: int = 128):
        super().__init__()
        if len(channels) != 4:
            raise ValueError("a line reader has four convolution blocks")
        pools = ((2, 2), (2, 2), (2, 1), (2, 1))
        layers: list[nn.Module] = []
        for index, (width, pool) in enumerate(zip(channels, pools, strict=True)):
            layers += _block(channels[index - 1] if index else 1, width, pool)
        self.features = nn.Sequential(*layers)
        rows = LINE_HEIGHT // 16
        self.sequence = nn.Sequential(
            nn.Conv1d(channels[-1] * rows, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, BLANK + 1, 1),
        )

    def forward(self, lines: torch.Tensor) -> torch.Tensor:
        features = self.features(lines)  # (B, C, LINE_HEIGHT / 16, W / 4)
        return self.sequence(features.flatten(1, 2))
