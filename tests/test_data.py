import gzip
import hashlib
import http.server
import threading
import time
from functools import partial

import numpy as np
import pytest
import torch

from conftest import idx_bytes, tiny_dataset_arrays, write_idx
from digitlab.data.datasets import (
    BatchLoader,
    DatasetInfo,
    Split,
    dataset_info,
    load_dataset,
    read_idx,
    register_dataset,
    stratified_split,
)
from digitlab.data.fetch import data_root, fetch, sha256_of
from digitlab.errors import DataError

# --- real MNIST -----------------------------------------------------------------------------------


def test_mnist_files_match_their_checksums(mnist):
    info = dataset_info("mnist")
    cached = data_root() / "mnist"
    for name, expected in info.sha256.items():
        assert sha256_of(cached / name) == expected


def test_mnist_splits_have_the_documented_sizes_and_types(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (55_000, 5_000, 10_000)
    for split in mnist.splits().values():
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)
    assert sorted(torch.unique(mnist.test.labels).tolist()) == list(range(10))


def test_validation_split_is_stratified_and_fixed(mnist):
    train_share = torch.bincount(mnist.train.labels).double() / len(mnist.train)
    val_share = torch.bincount(mnist.val.labels).double() / len(mnist.val)
    assert (train_share - val_share).abs().max() < 0.001
    labels = torch.cat([mnist.train.labels, mnist.val.labels])
    train_index, val_index = stratified_split(labels, 5000, seed=0)
    again, _ = stratified_split(labels, 5000, seed=0)
    assert torch.equal(train_index, again)
    assert len(set(train_index.tolist()) | set(val_index.tolist())) == len(labels)


# --- the IDX reader -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "type_code, dtype",
    [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_read_idx_round_trips_every_type(tmp_path, suffix, type_code, dtype):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"x.idx{suffix}", array, type_code)
    assert np.array_equal(read_idx(path).numpy(), array)


def _corrupt(tmp_path, name, payload):
    path = tmp_path / name
    path.write_bytes(payload)
    return path


GOOD = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "too short"),
        (b"\x01\x00\x08\x03" + GOOD[4:], "bad magic number"),
        (b"\x00\x00\x07\x03" + GOOD[4:], "unknown IDX data type"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (GOOD[:10], "ends inside"),
        (GOOD[:-1], "holds 2,351 bytes, not that"),
        (GOOD + b"\x00", "holds more than that"),
        (b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3, "more than the"),
    ],
)
def test_read_idx_refuses_malformed_files(tmp_path, payload, message):
    path = _corrupt(tmp_path, "bad-idx", payload)
    with pytest.raises(DataError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_read_idx_refuses_a_corrupt_gzip_and_a_missing_file(tmp_path):
    packed = gzip.compress(GOOD)
    path = _corrupt(tmp_path, "bad.gz", packed[:20] + bytes(len(packed) - 20))
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "absent")


# --- fetching, against a local HTTP server ---------------------------------------------------------


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP mirror on 127.0.0.1 serving gzipped generated IDX files, and their registry entry."""
    served = tmp_path / "served"
    served.mkdir()
    arrays = tiny_dataset_arrays()
    checksums = {}
    for name, array in arrays.items():
        checksums[name] = hashlib.sha256(idx_bytes(array)).hexdigest()
        (served / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    info = register_dataset(
        DatasetInfo(
            name="tiny-test",
            classes=tuple("0123456789"),
            sha256=checksums,
            mirrors=(f"http://127.0.0.1:{server.server_port}/",),
        )
    )
    yield info, served
    server.shutdown()


def test_fetch_downloads_verifies_and_caches(mirror, tmp_path):
    info, _ = mirror
    paths = fetch(info, tmp_path / "cache", sources=("cache", "mirrors"))
    for name, path in paths.items():
        assert sha256_of(path) == info.sha256[name]
    assert sorted(p.name for p in (tmp_path / "cache" / info.name).iterdir()) == sorted(info.sha256)
    data = load_dataset(info.name, root=tmp_path / "cache", val_size=10, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)


def test_fetch_refuses_a_corrupted_download_and_leaves_nothing_behind(mirror, tmp_path):
    info, served = mirror
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.ones(20, dtype=np.uint8))))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: .*SHA-256 mismatch"):
        fetch(info, tmp_path / "cache", sources=("cache", "mirrors"))
    kept = sorted(p.name for p in (tmp_path / "cache" / info.name).iterdir())
    assert kept == sorted(set(info.sha256) - {"t10k-labels-idx1-ubyte"})  # only verified files, no temp files


def test_fetch_moves_on_from_an_unreachable_mirror_at_once(mirror, tmp_path):
    info, _ = mirror
    listener = __import__("socket").socket()
    listener.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    listener.close()
    started = time.perf_counter()
    fetch(info, tmp_path / "cache", sources=("mirrors",), mirrors=[dead, info.mirrors[0]])
    assert time.perf_counter() - started < 10


def test_a_corrupt_cached_file_is_an_error_not_silently_used(mirror, tmp_path):
    info, _ = mirror
    fetch(info, tmp_path / "cache", sources=("mirrors",))
    target = tmp_path / "cache" / info.name / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-1] + b"\x07")
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        load_dataset(info.name, root=tmp_path / "cache", val_size=10)


def test_unknown_dataset_is_a_data_error():
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope")


@pytest.mark.fashion
def test_fashion_mnist_comes_from_the_debian_package(tmp_path):
    data = load_dataset("fashion-mnist", root=tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert data.classes[9] == "Ankle boot"


# --- the batch loader -----------------------------------------------------------------------------


def test_batch_loader_covers_each_example_once_in_a_new_order_each_epoch():
    split = Split(
        torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 28, 28).contiguous(), torch.arange(10)
    )
    loader = BatchLoader(split, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert len(loader) == 3
    epochs = [torch.cat([labels for _, labels in loader]) for _ in range(2)]
    for seen in epochs:
        assert sorted(seen.tolist()) == list(range(10))
    assert not torch.equal(epochs[0], epochs[1])
    for images, labels in loader:
        assert torch.equal(images[:, 0, 0, 0].long(), labels)
    plain = BatchLoader(split, batch_size=4, drop_last=True)
    assert len(plain) == 2 and torch.cat([labels for _, labels in plain]).tolist() == list(range(8))
