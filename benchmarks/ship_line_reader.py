"""Train the line reader shipped inside the package (digitlab.models.linereader) and write it to src/digitlab/weights/.

The reader is trained with CTC on --lines lines of numbers of 1-10 digits composed of MNIST's
training digits, made as `predict --number` makes a line from a photo (digitlab.training.linereader);
the epoch kept is the one that reads the most of --val-lines lines of validation digits exactly.
The lines are made in chunks of CHUNK (each its own seed) and cached in runs/line-reader/lines-*.npz,
so a longer run reuses a shorter one's. About 80 ms a line to make on 2 shared cores, and 20 ms a
line an epoch to train (one thread).

The shipped reader is a CRNN (--recurrent 96: a bidirectional LSTM reads the convolutions' frames)
that started from the convolutions of the first, plain reader (--epochs 5 --recurrent 0, written
to a file of its own with --out) and was trained on:

    python benchmarks/ship_line_reader.py --start PLAIN.safetensors --recurrent 96 --lines 12000 --epochs 8
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
CHUNK = 2000  # lines made per seed


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


def training_lines(split, count: int) -> Lines:
    """`count` training lines (a whole number of chunks: chunk k is made with seed 100 + k)."""
    chunks = [cached_lines(split, CHUNK, 100 + chunk, "train") for chunk in range(-(-count // CHUNK))]
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
    parser.add_argument("--lines", type=int, default=12000, help="training lines")
    parser.add_argument("--val-lines", type=int, default=1000, help="validation lines")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs")
    parser.add_argument("--recurrent", type=int, default=96, help="LSTM units each way (0: convolutions only)")
    parser.add_argument("--start", type=Path, default=None, help="a reader whose fitting weights to start from")
    parser.add_argument("--peak", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is faster on busy cores)")
    parser.add_argument("--out", type=Path, default=LINE_READER_FILE, help="where to write the reader")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mnist = digitlab.load_dataset("mnist")
    val = cached_lines(mnist.val, args.val_lines, 1, "val")
    train = training_lines(mnist.train, args.lines)
    model, history = train_line_reader(
        train,
        val,
        epochs=args.epochs,
        peak=args.peak,
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
