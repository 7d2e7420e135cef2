"""Train the line reader shipped inside the package (digitlab.models.linereader) and write it to src/digitlab/weights/.

The reader is trained with CTC on --lines lines of numbers of 1-10 digits composed of MNIST's
training digits, made as `predict --number` makes a line from a photo (digitlab.training.linereader);
the epoch kept is the one that reads the most of --val-lines lines of validation digits exactly.
The lines are cached in runs/line-reader/lines-*.npz and reused. About 7 minutes to make the lines
and 2 a training epoch on 2 shared cores.

    python benchmarks/ship_line_reader.py [--lines 20000] [--val-lines 1000] [--epochs 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import digitlab
from digitlab.inference.linereader import LINE_READER_FILE
from digitlab.runs.run import save_model
from digitlab.training.linereader import Lines, make_lines, train_line_reader

FOLDER = Path("runs/line-reader")


def cached_lines(split, count: int, seed: int, name: str) -> Lines:
    """`count` lines of `split`, made once and kept in FOLDER."""
    path = FOLDER / f"lines-{name}-{count}-{seed}.npz"
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        widths, lengths = stored["widths"], stored["lengths"]
        pictures = np.split(stored["pixels"], np.cumsum(widths)[:-1], axis=1)
        targets = [list(map(int, part)) for part in np.split(stored["digits"], np.cumsum(lengths)[:-1])]
        return Lines(pictures, targets)
    started = time.perf_counter()
    torch.set_num_threads(1)  # each digit's small bicubic upsample is slower threaded
    lines = make_lines(split, count, seed)
    torch.set_num_threads(2)
    FOLDER.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        pixels=np.concatenate(lines.pictures, axis=1),
        widths=np.array([picture.shape[1] for picture in lines.pictures]),
        digits=np.concatenate([np.array(target) for target in lines.targets]),
        lengths=np.array([len(target) for target in lines.targets]),
    )
    print(f"made {count:,} {name} lines in {time.perf_counter() - started:.0f} s", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20000, help="training lines (default 20000)")
    parser.add_argument("--val-lines", type=int, default=1000, help="validation lines (default 1000)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    args = parser.parse_args()
    mnist = digitlab.load_dataset("mnist")
    val = cached_lines(mnist.val, args.val_lines, 1, "val")
    train = cached_lines(mnist.train, args.lines, 0, "train")
    model, history = train_line_reader(
        train, val, epochs=args.epochs, report=lambda row: print({k: round(v, 4) for k, v in row.items()}, flush=True)
    )
    metrics = {"val_exact": max(row["val_exact"] for row in history), "lines": args.lines, "history": history}
    save_model(model, LINE_READER_FILE, dtype=torch.float16, metrics=metrics)
    print(
        f"wrote {LINE_READER_FILE} ({LINE_READER_FILE.stat().st_size / 1024:.0f} kB): {metrics['val_exact']:.2%} of validation lines read exactly"
    )


if __name__ == "__main__":
    main()
