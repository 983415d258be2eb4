"""The IDX reader, MNIST-format folders, the generated shapes and Debian's Fashion-MNIST."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from npconv.data import (
    DEFAULT_DIRS,
    FASHION_CLASSES,
    SHAPE_CLASSES,
    load_dataset,
    load_mnist_folder,
    make_shapes,
    parse_idx,
    read_idx,
    standardize,
    write_idx,
)

FASHION_DIR = DEFAULT_DIRS["fashion-mnist"]
HAVE_FASHION = os.path.isfile(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_idx_round_trip(tmp_path, dtype, compress):
    a = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / "a.idx"
    write_idx(path, a, compress=compress)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == compress
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(b, a)


def _header(code=0x08, dims=(2, 3)):
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, ">u4").tobytes()


@pytest.mark.parametrize("data,message", [
    (b"", "too short"),
    (b"\x00\x00", "too short"),
    (b"\x01\x02\x08\x01" + b"\x00" * 8, "bad magic number"),
    (_header(code=0x07) + bytes(6), "unknown element type code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated header"),
    (_header() + bytes(5), r"truncated: header says shape \(2, 3\) of uint8 \(18 bytes"),
    (_header() + bytes(7), "has trailing bytes"),
], ids=["empty", "two-bytes", "magic", "type", "no-dims", "short-header", "truncated",
        "trailing"])
def test_malformed_idx_is_refused(tmp_path, data, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    gz = tmp_path / "bad-idx3-ubyte.gz"  # the same problems inside a gzip stream
    gz.write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match=message):
        read_idx(gz)


def test_truncated_gzip_is_refused(tmp_path):
    path = tmp_path / "x.gz"
    blob = gzip.compress(_header() + bytes(6))
    path.write_bytes(blob[:-6])
    with pytest.raises(ValueError, match=r"x.gz.*corrupt or truncated gzip"):
        read_idx(path)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")
    assert parse_idx(_header() + bytes(6)).shape == (2, 3)


def _mnist_folder(folder, n_train=20, n_test=10, dotted=False, gz=True):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (("images-idx3", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                            ("labels-idx1", rng.integers(0, 10, n, dtype=np.uint8))):
            stem, magic = kind.split("-")
            name = f"{split}-{stem}.{magic}-ubyte" if dotted else f"{split}-{kind}-ubyte"
            write_idx(os.path.join(folder, name + (".gz" if gz else "")), array)


@pytest.mark.parametrize("dotted,gz", [(False, True), (True, False)], ids=["debian", "kaggle"])
def test_mnist_folder(tmp_path, dotted, gz):
    _mnist_folder(tmp_path, dotted=dotted, gz=gz)
    d = load_mnist_folder(tmp_path, train_size=15)
    assert d.train_images.shape == (15, 1, 28, 28) and d.test_images.shape == (10, 1, 28, 28)
    assert d.train_images.dtype == np.float32 and d.train_labels.dtype == np.int64
    assert 0.0 <= d.train_images.min() and d.train_images.max() <= 1.0
    assert d.num_classes == 10 and d.in_channels == 1 and d.image_size == 28
    d2 = load_dataset("mnist", tmp_path)
    assert len(d2.train_labels) == 20


def test_mnist_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist_folder(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist_folder(tmp_path)
    _mnist_folder(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(9, np.uint8))
    with pytest.raises(ValueError, match=r"holds 10 images but .* 9 labels"):
        load_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(10, 12, np.uint8))
    with pytest.raises(ValueError, match=r"label 12 is out of range \[0, 10\)"):
        load_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((10, 2), np.uint8))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*labels of shape \(N,\)"):
        load_mnist_folder(tmp_path)


def test_shapes_are_seeded_balanced_and_in_range():
    x, y = make_shapes(120, seed=5, size=20)
    x2, y2 = make_shapes(120, seed=5, size=20)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == (120, 3, 20, 20) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y, minlength=len(SHAPE_CLASSES)).tolist() == [20] * 6
    assert not np.array_equal(make_shapes(10, seed=6)[0], make_shapes(10, seed=5)[0])
    d = load_dataset("shapes", train_size=60, test_size=30)
    assert d.classes == SHAPE_CLASSES and d.in_channels == 3 and len(d.test_labels) == 30
    with pytest.raises(ValueError, match="size >= 12"):
        make_shapes(5, size=8)


def test_unknown_or_missing_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("fashion-mnist", tmp_path / "absent")


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist():
    d = load_dataset("fashion-mnist", train_size=1000, test_size=500, normalize=False)
    assert d.train_images.shape == (1000, 1, 28, 28) and d.test_images.shape == (500, 1, 28, 28)
    assert d.classes == FASHION_CLASSES and d.source == FASHION_DIR
    assert set(np.unique(d.train_labels)) == set(range(10))
    assert 0.2 < d.train_images.mean() < 0.4  # Fashion-MNIST's mean pixel is about 0.286
    standardize(d)
    assert abs(float(d.train_images.mean())) < 1e-4 and abs(d.train_images.std() - 1) < 1e-4
    assert 0.2 < float(d.mean[0]) < 0.4 and d.train_images.dtype == np.float32
