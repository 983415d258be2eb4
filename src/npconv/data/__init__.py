"""Data sets for training: generated shapes (the default) and MNIST-format folders.

Nothing is ever downloaded. ``shapes`` is generated from a seed; ``fashion-mnist``
is read from Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/
fashion-mnist``) and ``mnist`` from ``/usr/share/datasets/mnist``, or from any folder
holding the four MNIST files (``data_dir``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .idx import parse_idx, read_idx, write_idx
from .shapes import SHAPE_CLASSES, make_shapes

DATASETS = ("shapes", "fashion-mnist", "mnist")
DEFAULT_DIRS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
SHAPES_SIZES = (12000, 2000)  # train, test images of the generated data set


@dataclass
class Dataset:
    """Train and test splits: float32 images of shape (N, C, H, W), int64 labels (N,).

    ``mean`` and ``std`` (float32, shape (C,)) are what :func:`standardize` subtracted
    and divided by (zeros and ones for raw images in [0, 1]).
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: str
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def standardize(data: Dataset) -> Dataset:
    """Subtract the training split's per-channel mean and divide by its std, in place.

    Both splits use the training statistics (Fashion-MNIST: mean 0.2860, std 0.3530).
    Inputs centred on zero with unit spread is what PyTorch recipes feed LeNet-5 too
    (``transforms.Normalize``); it speeds up the first epochs noticeably.
    """
    x = data.train_images
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)  # (C,)
    std = x.std(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)  # (C,)
    std = np.where(std > 0, std, np.float32(1))
    for images in (data.train_images, data.test_images):
        images -= mean[None, :, None, None]
        images /= std[None, :, None, None]
    data.mean, data.std = mean, std
    return data


def _find(folder: str, split: str, kind: str) -> str:
    """Path of ``{split}-{kind}`` in ``folder``: plain or .gz, dash or dot spelling."""
    stem, magic = kind.split("-")  # "images", "idx3"
    names = [f"{split}-{stem}-{magic}-ubyte", f"{split}-{stem}.{magic}-ubyte"]
    for name in names:
        for candidate in (name, name + ".gz"):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"no {names[0]}[.gz] in {folder!r} (an MNIST-format folder "
                            f"holds train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                            f"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, gzipped "
                            f"or not)")


def _read_split(folder: str, split: str, limit: int | None, num_classes: int):
    images_path = _find(folder, split, "images-idx3")
    labels_path = _find(folder, split, "labels-idx1")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"IDX file {images_path!r}: expected uint8 images of shape "
                         f"(N, H, W), got {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"IDX file {labels_path!r}: expected uint8 labels of shape (N,), "
                         f"got {labels.dtype} of shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path!r} holds {len(images)} images but {labels_path!r} "
                         f"holds {len(labels)} labels")
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"IDX file {labels_path!r}: label {labels.max()} is out of range "
                         f"[0, {num_classes})")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = images[:, None].astype(np.float32) / np.float32(255)  # (N, 1, H, W)
    return x, labels.astype(np.int64)


def load_mnist_folder(folder, name: str = "mnist", classes=DIGIT_CLASSES, *,
                      train_size: int | None = None, test_size: int | None = None) -> Dataset:
    """The four MNIST-format files of ``folder`` as a :class:`Dataset`.

    ``train_size`` / ``test_size`` keep only the first images of each split.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"data folder {folder!r} does not exist")
    train = _read_split(folder, "train", train_size, len(classes))
    test = _read_split(folder, "t10k", test_size, len(classes))
    return Dataset(name, *train, *test, tuple(classes), folder)


def load_dataset(name: str = "shapes", data_dir=None, *, train_size: int | None = None,
                 test_size: int | None = None, seed: int = 0, normalize: bool = True) -> Dataset:
    """Load one of :data:`DATASETS`.

    Parameters
    ----------
    name : {"shapes", "fashion-mnist", "mnist"}
    data_dir : path, optional
        An MNIST-format folder (default: Debian's location for the two MNIST sets).
    train_size, test_size : int, optional
        Keep only the first images (shapes: how many to generate; default 12000 / 2000).
    seed : int
        Seed of the generated shapes (the test set uses ``seed + 1``).
    normalize : bool
        Standardise the images with the training split's mean and std
        (:func:`standardize`); False keeps pixels in [0, 1].
    """
    data = _load(name, data_dir, train_size, test_size, seed)
    return standardize(data) if normalize else data


def _load(name, data_dir, train_size, test_size, seed) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    for label, size in (("train_size", train_size), ("test_size", test_size)):
        if size is not None and size < 1:
            raise ValueError(f"{label} must be positive, got {size}")
    if name == "shapes":
        n_train = SHAPES_SIZES[0] if train_size is None else train_size
        n_test = SHAPES_SIZES[1] if test_size is None else test_size
        train = make_shapes(n_train, seed=seed)
        test = make_shapes(n_test, seed=seed + 1)
        return Dataset(name, *train, *test, SHAPE_CLASSES, f"generated (seed {seed})")
    folder = os.fspath(data_dir) if data_dir is not None else DEFAULT_DIRS[name]
    if data_dir is None and not os.path.isdir(folder):
        hint = (" (install Debian's package: apt-get install dataset-fashion-mnist)"
                if name == "fashion-mnist" else "")
        raise FileNotFoundError(f"{name} not found in {folder!r}{hint}; or pass --data DIR "
                                f"with the four MNIST-format files")
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    return load_mnist_folder(folder, name, classes, train_size=train_size, test_size=test_size)


__all__ = [
    "DATASETS",
    "DEFAULT_DIRS",
    "FASHION_CLASSES",
    "SHAPE_CLASSES",
    "Dataset",
    "load_dataset",
    "load_mnist_folder",
    "make_shapes",
    "parse_idx",
    "read_idx",
    "standardize",
    "write_idx",
]
