"""Train the line reader shipped inside the package (digitlab.models.linereader) and write it to src/digitlab/weights/.

The reader is trained with CTC on --lines lines of numbers of 1-10 digits composed of MNIST's
training digits, made as `predict --number` makes a line from a photo (digitlab.training.linereader);
the epoch kept is the one that reads the most of --val-lines lines of validation digits exactly.
The lines are cached in runs/line-reader/lines-*.npz and reused; with --chunk they are made in
chunks of that many lines (chunk k with seed 100 + k), so a longer run reuses a shorter one's.
About 30-80 ms a line to make on 2 shared cores, and 5-20 ms a line an epoch to train.

The shipped reader is the plain one these defaults train (5 epochs on 20,000 lines, 84.9% of the
validation lines read exactly). A CRNN tried beside it (docs/prediction.md: it read more validation
lines exactly but fewer composed validation numbers, so it is not shipped) was trained with

    python benchmarks/ship_line_reader.py --start src/digitlab/weights/digitlab-line-reader.safetensors \
        --recurrent 96 --lines 10000 --chunk 2000 --epochs 8 --stretch 0.15 --threads 1 --out crnn.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import digitlab
from digitlab.inference.linereader import LINE_READER_FILE
from digitlab.models.nets import create_model
from digitlab.runs.run import load_model, save_model
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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each digit's small bicubic upsample is slower threaded
    lines = make_lines(split, count, seed)
    torch.set_num_threads(threads)
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


def training_lines(split, count: int, chunk: int) -> Lines:
    """`count` training lines: made with seed 0, or in chunks of `chunk` lines (chunk k with seed 100 + k)."""
    if not chunk:
        return cached_lines(split, count, 0, "train")
    chunks = [cached_lines(split, chunk, 100 + number, "train") for number in range(-(-count // chunk))]
    return Lines(
        [picture for chunk in chunks for picture in chunk.pictures][:count],
        [target for chunk in chunks for target in chunk.targets][:count],
    )


def starting_model(start: Path | None, recurrent: int) -> torch.nn.Module:
    """A new reader (with a recurrent reading of `recurrent` units each way, or none) whose weights that
    fit are those of the reader in `start`, if given."""
    model = create_model("line-reader", **({"recurrent": recurrent, "layers": 1} if recurrent else {}))
    if start is not None:
        own = model.state_dict()
        given = load_model(start)[0].state_dict()
        fitting = {name: tensor for name, tensor in given.items() if name in own and own[name].shape == tensor.shape}
        model.load_state_dict(fitting, strict=False)
        print(f"started from {len(fitting)} of {len(own)} tensors of {start}", flush=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=20000, help="training lines")
    parser.add_argument("--chunk", type=int, default=0, help="make the lines in chunks of this many (0: one set)")
    parser.add_argument("--val-lines", type=int, default=1000, help="validation lines")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument("--recurrent", type=int, default=0, help="LSTM units each way (0: convolutions only)")
    parser.add_argument("--stretch", type=float, default=0.0, help="stretch each batch along the line by 1 ± this")
    parser.add_argument("--start", type=Path, default=None, help="a reader whose fitting weights to start from")
    parser.add_argument("--peak", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (one is faster on busy cores)")
    parser.add_argument("--out", type=Path, default=LINE_READER_FILE, help="where to write the reader")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mnist = digitlab.load_dataset("mnist")
    val = cached_lines(mnist.val, args.val_lines, 1, "val")
    train = training_lines(mnist.train, args.lines, args.chunk)
    model, history = train_line_reader(
        train,
        val,
        epochs=args.epochs,
        peak=args.peak,
        stretch=args.stretch,
        model=starting_model(args.start, args.recurrent),
        report=lambda row: print({k: round(v, 4) for k, v in row.items()}, flush=True),
    )
    metrics = {"val_exact": max(row["val_exact"] for row in history), "lines": args.lines, "history": history}
    save_model(model, args.out, dtype=torch.float16, metrics=metrics)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB): {metrics['val_exact']:.2%} of validation lines read exactly"
    )


if __name__ == "__main__":
    main()
