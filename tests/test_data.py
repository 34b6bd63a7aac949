import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from bchw.data import FASHION_MNIST_DIR, load_dataset, read_idx, read_idx_split
from bchw.errors import BchwError

TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    code = TYPE_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx_set(directory: Path, n_train=60, n_test=12, gz=True, sep="-", seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(directory / f"{part}-images{sep}idx3-ubyte{suffix}", images, gz)
        write_idx(directory / f"{part}-labels{sep}idx1-ubyte{suffix}", labels, gz)
        arrays[part] = images, labels
    return arrays


# IDX parser

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("array", [
    np.arange(7, dtype=np.uint8),
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([[-300, 2], [5, 32000]], dtype=np.int16),
    np.array([1.5, -2.25], dtype=np.float32),
], ids=["u8-1d", "u8-3d", "i16", "f32"])
def test_read_idx_round_trip(tmp_path, array, gz):
    out = read_idx(write_idx(tmp_path / "a.idx", array, gz))
    assert out.dtype == array.dtype and out.shape == array.shape
    assert np.array_equal(out, array)


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize("content,field", [
    (b"", "magic"),
    (b"\0\0\x08", "magic"),
    (b"\x01" + GOOD[1:], "magic"),
    (GOOD[:2] + b"\x07" + GOOD[3:], "dtype"),
    (GOOD[:3] + b"\x00", "ndim"),
    (GOOD[:9], "dims"),
    (GOOD[:-1], "data"),
    (GOOD + b"\0", "data"),
    (GOOD[:3] + b"\x04" + GOOD[4:], "data"),  # declares 4 dims: header eats the data
], ids=["empty", "short", "magic", "dtype", "ndim0", "short-dims", "truncated", "trailing",
        "ndim-mismatch"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_corrupt_files(tmp_path, content, field, gz):
    path = tmp_path / "bad.idx"
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(BchwError) as e:
        read_idx(path)
    assert e.value.field == field
    assert e.value.path == str(path)


def test_read_idx_rejects_corrupt_gzip_and_missing_files(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(GOOD)[:-10])
    with pytest.raises(BchwError, match="gzip") as e:
        read_idx(path)
    assert e.value.path == str(path)
    with pytest.raises(BchwError) as e:
        read_idx(tmp_path / "absent")
    assert e.value.path == str(tmp_path / "absent")


def test_read_idx_split(tmp_path):
    images = np.arange(3 * 4, dtype=np.uint8).reshape(3, 2, 2)
    labels = np.array([0, 9, 3], dtype=np.uint8)
    split = read_idx_split(write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", labels),
                           10)
    assert split.images.shape == (3, 4) and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int64 and split.labels.tolist() == [0, 9, 3]
    assert np.array_equal(split.images[1], [4, 5, 6, 7])


@pytest.mark.parametrize("images,labels,field,culprit", [
    (np.zeros((3, 2, 2), np.uint8), np.zeros(4, np.uint8), "count", "l"),
    (np.zeros((3, 2, 2), np.uint8), np.array([1, 10, 2], np.uint8), "labels", "l"),
    (np.zeros((3, 2, 2), np.int16), np.zeros(3, np.uint8), "dtype", "i"),
    (np.zeros(3, np.uint8), np.zeros(3, np.uint8), "ndim", "i"),
    (np.zeros((3, 2, 2), np.uint8), np.zeros((3, 1), np.uint8), "ndim", "l"),
    (np.zeros((3, 2, 2), np.uint8), np.zeros(3, np.float32), "dtype", "l"),
])
def test_read_idx_split_rejects_mismatches(tmp_path, images, labels, field, culprit):
    i, lab = write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", labels)
    with pytest.raises(BchwError) as e:
        read_idx_split(i, lab, 10)
    assert e.value.field == field
    assert e.value.path == str(tmp_path / culprit)


# IDX data sets

@pytest.mark.parametrize("gz,sep", [(True, "-"), (False, "-"), (False, ".")])
def test_idx_dataset_uses_the_last_training_images_for_validation(tmp_path, gz, sep):
    arrays = write_idx_set(tmp_path, gz=gz, sep=sep)
    data = load_dataset("fashion-mnist", tmp_path)
    train_images, train_labels = arrays["train"]
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 12)
    assert data.num_features == 784 and data.num_classes == 10 and data.name == "fashion-mnist"
    assert np.array_equal(data.train.images, train_images[:50].reshape(50, 784))
    assert np.array_equal(data.val.labels, train_labels[50:])
    assert np.array_equal(data.test.images, arrays["t10k"][0].reshape(12, 784))
    assert data.test.labels.dtype == np.int64
    assert len(load_dataset("mnist", tmp_path).train) == 50


def test_missing_idx_files_say_which_and_how_to_get_them(tmp_path):
    with pytest.raises(BchwError, match="apt-get install dataset-fashion-mnist") as e:
        load_dataset("fashion-mnist", tmp_path)
    assert "train-images-idx3-ubyte" in e.value.path
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(BchwError, match="--data-dir") as e:
        load_dataset("mnist", tmp_path)
    assert "t10k-labels-idx1-ubyte" in e.value.path
    with pytest.raises(BchwError) as e:
        load_dataset("mnist")
    assert e.value.field == "data_dir"
    with pytest.raises(BchwError) as e:
        load_dataset("cifar10")
    assert e.value.field == "dataset"


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="dataset-fashion-mnist "
                    "not installed")
def test_installed_fashion_mnist():
    data = load_dataset("fashion-mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (50_000, 10_000, 10_000)
    assert data.train.images.shape == (50_000, 784) and data.train.images.dtype == np.uint8
    assert set(np.unique(data.test.labels)) == set(range(10))


# small data sets

def test_digits():
    from sklearn.datasets import load_digits

    data = load_dataset("digits")
    assert (len(data.train), len(data.val), len(data.test)) == (1197, 300, 300)
    assert data.num_features == 64 and data.num_classes == 10
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    everything = np.concatenate([data.train.images, data.val.images, data.test.images])
    allowed = np.round(np.arange(17) * 255 / 16)
    assert everything.max() == 255 and np.isin(everything, allowed).all()
    # The splits are a permutation of the whole set, identical on every load.
    original = np.round(load_digits().data * 255 / 16).astype(np.uint8)
    assert sorted(map(bytes, everything)) == sorted(map(bytes, original))
    again = load_dataset("digits")
    assert np.array_equal(again.test.images, data.test.images)
    assert not np.array_equal(load_dataset("digits", seed=1).test.labels, data.test.labels)


def test_mnist5k():
    data = load_dataset("mnist5k")
    assert (len(data.train), len(data.val), len(data.test)) == (3500, 500, 1000)
    assert data.num_features == 784 and data.train.images.dtype == np.uint8
    assert set(np.unique(data.test.labels)) == set(range(10))
    assert data.train.images.max() == 255
