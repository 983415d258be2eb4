"""The two networks of the training command, as ``Sequential`` models.

Both are built from a seed, so the same seed gives the same initial weights; their
``state_dict()`` keys are those of the same ``torch.nn.Sequential``.

* ``book``: the book's MNIST model: Conv(8 kernels 5x5) -> ReLU -> MaxPool 2x2 ->
  Flatten -> BatchNorm1d -> Linear(classes); trained with Adam, batch 64, learning
  rate 0.01 times 0.9 every 500 steps.
* ``lenet5``: LeNet-5 with ReLU and max pooling: Conv 6@5x5 pad 2 -> ReLU -> MaxPool 2
  -> Conv 16@5x5 -> ReLU -> MaxPool 2 -> Flatten -> Linear 120 -> ReLU -> Linear 84 ->
  ReLU -> Linear(classes); Adam 1e-3, batch 64.
"""

from __future__ import annotations

import numpy as np

from .init import as_generator
from .layers import Conv2d, Flatten, Linear, ReLU
from .module import Sequential
from .norm import BatchNorm1d
from .pooling import MaxPool2d

# The training recipe of each model (the defaults of ``npconv train``).
RECIPES = {
    "book": {"optimizer": "adam", "lr": 0.01, "lr_step": 500, "lr_gamma": 0.9,
             "batch_size": 64, "epochs": 5},
    "lenet5": {"optimizer": "adam", "lr": 1e-3, "lr_step": 0, "lr_gamma": 1.0,
               "batch_size": 64, "epochs": 10},
}


def book_model(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, *,
               algorithm: str = "auto", dtype=np.float32, rng=None) -> Sequential:
    """The book's CNN for images of shape (N, in_channels, image_size, image_size)."""
    rng = as_generator(rng)
    side = (image_size - 4) // 2  # 5x5 valid convolution, then 2x2 pooling
    if side < 1:
        raise ValueError(f"book model: images of {image_size}x{image_size} are too small")
    features = 8 * side * side
    return Sequential(
        Conv2d(in_channels, 8, 5, algorithm=algorithm, dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        BatchNorm1d(features, dtype=dtype),
        Linear(features, num_classes, dtype=dtype, rng=rng),
    )


def lenet5(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, *,
           algorithm: str = "auto", dtype=np.float32, rng=None) -> Sequential:
    """LeNet-5 for images of shape (N, in_channels, image_size, image_size)."""
    rng = as_generator(rng)
    side = ((image_size // 2) - 4) // 2  # same conv, pool, valid 5x5 conv, pool
    if side < 1:
        raise ValueError(f"lenet5: images of {image_size}x{image_size} are too small")
    features = 16 * side * side
    return Sequential(
        Conv2d(in_channels, 6, 5, padding=2, algorithm=algorithm, dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2d(2),
        Conv2d(6, 16, 5, algorithm=algorithm, dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(features, 120, dtype=dtype, rng=rng),
        ReLU(),
        Linear(120, 84, dtype=dtype, rng=rng),
        ReLU(),
        Linear(84, num_classes, dtype=dtype, rng=rng),
    )


# Epochs when the data set is not Fashion-MNIST/MNIST (the shapes are learnt in ~10).
DATASET_EPOCHS = {"shapes": 10}

MODELS = {"book": book_model, "lenet5": lenet5}


def build_model(name: str, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                *, seed=0, algorithm: str = "auto", dtype=np.float32) -> Sequential:
    """``MODELS[name]`` initialised from ``seed`` (an int, a Generator or None)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](in_channels, image_size, num_classes, algorithm=algorithm,
                        dtype=dtype, rng=seed)
