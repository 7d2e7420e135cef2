"""A reader of a whole line of digits that never cuts it: a small CNN over the line, trained with CTC.

The line is a float picture (B, 1, LINE_HEIGHT, W) of white ink on black, its ink rows scaled to
about 24 px (digitlab.inference.linereader.line_image). Four 3×3 convolution blocks halve the
height four times and the width twice, so each output frame sees a column 4 px wide of the line
(and, through the convolutions, ±~20 px around it, about a digit). The frames are then read along
the line: by two 1-D convolutions over each frame's neighbours, or, with `recurrent`, by a
bidirectional LSTM that sees the whole line (a CRNN: Shi et al. 2017; Zhan et al. 2018 for
handwritten digit strings), so a digit squeezed against its neighbour is read with both in view.
The output is logits (B, 11, W / 4) per frame: the digits 0-9 and BLANK, CTC's "no new digit here"
(Graves et al. 2006).
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


class _Recurrent(nn.Module):
    """Frames (B, C, T) read by a bidirectional LSTM: (B, 2 × hidden, T)."""

    def __init__(self, features: int, hidden: int, layers: int):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, bidirectional=True, batch_first=True)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.lstm(frames.transpose(1, 2))[0].transpose(1, 2)


@register_model("line-reader", trainable=False)
class LineReader(nn.Module):
    """Logits (B, 11, W // STRIDE) per frame for lines (B, 1, LINE_HEIGHT, W); see the module docstring.
    `recurrent` > 0 reads the frames with a bidirectional LSTM of that many units each way (`layers` deep)
    instead of the convolutions along the line."""

    def __init__(
        self, channels: tuple[int, ...] = (16, 32, 64, 64), hidden: int = 128, recurrent: int = 0, layers: int = 2
    ):
        super().__init__()
        if len(channels) != 4:
            raise ValueError("a line reader has four convolution blocks")
        pools = ((2, 2), (2, 2), (2, 1), (2, 1))
        blocks: list[nn.Module] = []
        for index, (width, pool) in enumerate(zip(channels, pools, strict=True)):
            blocks += _block(channels[index - 1] if index else 1, width, pool)
        self.features = nn.Sequential(*blocks)
        rows = LINE_HEIGHT // 16
        along: list[nn.Module] = [nn.Conv1d(channels[-1] * rows, hidden, 3, padding=1), nn.ReLU(inplace=True)]
        if recurrent:
            along += [_Recurrent(hidden, recurrent, layers), nn.Conv1d(2 * recurrent, BLANK + 1, 1)]
        else:
            along += [nn.Conv1d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv1d(hidden, BLANK + 1, 1)]
        self.sequence = nn.Sequential(*along)

    def forward(self, lines: torch.Tensor) -> torch.Tensor:
        features = self.features(lines)  # (B, C, LINE_HEIGHT / 16, W / 4)
        return self.sequence(features.flatten(1, 2))
