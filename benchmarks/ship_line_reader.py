"""Train the line reader shipped inside the package (digitlab.models.linereader) and write it to src/digitlab/weights/.

The reader is trained with CTC on --lines lines of numbers of 1-10 digits composed of MNIST's
training digits, made as `predict --number` makes a line from a photo (digitlab.training.linereader);
the epoch kept is the one that reads the most of --val-lines lines of validation digits exactly.
The lines are cached in runs/line-reader/lines-*.npz and reused; with --chunk they are made in
chunks of that many lines (chunk k with seed 100 + k), so a longer run reuses a shorter one's.
--touching and --long set the shares of composed lines with touching digits and of 10 digits;
--photos adds lines read from the number suite's phone photos of training digits (that many of
each class). About 30-80 ms a line to make on 2 quiet cores (a photo line ~0.4 s), and 5-20 ms a
line an epoch to train. The file also stores where the reader places its digits (metadata
`reading`: read_shift, measured on validation numbers by training.linereader.measure_read_shift).

The shipped reader is the plain one these defaults train (5 epochs on 20,000 lines, 84.9% of the
validation lines read exactly). A CRNN tried beside it (docs/prediction.md: it read more validation
lines exactly but fewer composed validation numbers, so it is not shipped) was trained with

    python benchmarks/ship_line_reader.py --start src/digitlab/weights/digitlab-line-reader.safetensors \
        --recurrent 96 --lines 10000 --chunk 2000 --epochs 8 --stretch 0.15 --threads 1 --out crnn.safetensors
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import digitlab
from digitlab.files import atomic_write
from digitlab.inference.linereader import LINE_READER_FILE
from digitlab.models.nets import create_model
from digitlab.runs.run import load_model, save_model
from digitlab.training.linereader import Lines, make_lines, measure_read_shift, photo_lines, train_line_reader

FOLDER = Path("runs/line-reader")
PHOTO_CHUNK = 100  # photos of each suite class per cached chunk of photo lines


def cached_lines(name: str, make: Callable[[], Lines]) -> Lines:
    """The lines `make` makes, made once and kept in FOLDER as lines-NAME.npz."""
    path = FOLDER / f"lines-{name}.npz"
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        widths, lengths = stored["widths"], stored["lengths"]
        pictures = np.split(stored["pixels"], np.cumsum(widths)[:-1], axis=1)
        targets = [list(map(int, part)) for part in np.split(stored["digits"], np.cumsum(lengths)[:-1])]
        return Lines(pictures, targets)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each digit's small bicubic upsample is slower threaded
    lines = make()
    torch.set_num_threads(threads)
    FOLDER.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temp: _save(temp, lines))
    print(f"made {len(lines):,} lines {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return lines


def _save(path: str, lines: Lines) -> None:
    with open(path, "wb") as file:  # a file, so numpy adds no .npz to the temporary name
        np.savez(
            file,
            pixels=np.concatenate(lines.pictures, axis=1),
            widths=np.array([picture.shape[1] for picture in lines.pictures]),
            digits=np.concatenate([np.array(target) for target in lines.targets]),
            lengths=np.array([len(target) for target in lines.targets]),
        )


def composed_lines(split, count: int, seed: int, name: str, touching: float = 0.5, long: float = 0.0) -> Lines:
    """`count` composed lines of `split` (training.linereader.make_lines), cached."""
    mix = "" if (touching, long) == (0.5, 0.0) else f"t{touching:g}-l{long:g}-"
    return cached_lines(
        f"{name}-{mix}{count}-{seed}", lambda: make_lines(split, count, seed, touching=touching, long=long)
    )


def training_lines(split, args: argparse.Namespace) -> Lines:
    """--lines composed training lines (seed 0, or in chunks of --chunk lines, chunk k with seed 100 + k) and
    --photos photo lines of each suite class (in chunks of 100 per class, chunk k with seed 200 + k)."""
    mix = {"touching": args.touching, "long": args.long}
    if not args.chunk:
        chunks = [composed_lines(split, args.lines, 0, "train", **mix)] if args.lines else []
    else:
        chunks = [
            composed_lines(split, args.chunk, 100 + number, "train", **mix)
            for number in range(-(-args.lines // args.chunk))
        ]
    chunks += [
        cached_lines(
            f"photos-train-{PHOTO_CHUNK}-{200 + number}",
            lambda seed=200 + number: photo_lines(split, PHOTO_CHUNK, seed),
        )
        for number in range(-(-args.photos // PHOTO_CHUNK))
    ]
    return Lines(
        [picture for chunk in chunks for picture in chunk.pictures][: args.lines + 3 * args.photos],
        [target for chunk in chunks for target in chunk.targets][: args.lines + 3 * args.photos],
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
    parser.add_argument("--touching", type=float, default=0.5, help="share of composed lines with touching digits")
    parser.add_argument("--long", type=float, default=0.0, help="share of composed lines 10 digits long")
    parser.add_argument("--photos", type=int, default=0, help="photo lines of each number-suite class (train digits)")
    parser.add_argument("--make-only", action="store_true", help="make (and cache) the lines, train nothing")
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
    val = composed_lines(mnist.val, args.val_lines, 1, "val")
    train = training_lines(mnist.train, args)
    if args.make_only:
        return
    model, history = train_line_reader(
        train,
        val,
        epochs=args.epochs,
        peak=args.peak,
        stretch=args.stretch,
        model=starting_model(args.start, args.recurrent),
        report=lambda row: print({k: round(v, 4) for k, v in row.items()}, flush=True),
    )
    metrics = {"val_exact": max(row["val_exact"] for row in history), "lines": len(train), "history": history}
    reading = {"read_shift": measure_read_shift(model, mnist.val)}
    save_model(model, args.out, dtype=torch.float16, metrics=metrics, reading=reading)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB): {metrics['val_exact']:.2%} of validation lines "
        f"read exactly; read shift {reading['read_shift']:.3f} x height"
    )


if __name__ == "__main__":
    main()
