"""Layers with forward and backward passes, for training CNNs on npconv's convolution.

Every layer follows PyTorch's ``torch.nn`` (names, defaults, initialisation, parameter
names), so ``model.state_dict()`` loads into the equivalent ``torch.nn.Sequential``
and back. The training loop, data and optimisers are in :mod:`npconv.nn.train`,
:mod:`npconv.data` and :mod:`npconv.optim`.
"""

from .init import kaiming_uniform
from .layers import GRAD_CONVENTIONS, Conv2d, Dropout, Flatten, Linear, ReLU
from .loss import SoftmaxCrossEntropy, log_softmax
from .models import MODELS, RECIPES, book_model, build_model, lenet5
from .module import Module, Parameter, Sequential
from .norm import BatchNorm1d, BatchNorm2d
from .pooling import (
    POOL_ALGORITHMS,
    AvgPool2d,
    MaxPool2d,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)

__all__ = [
    "GRAD_CONVENTIONS",
    "MODELS",
    "POOL_ALGORITHMS",
    "RECIPES",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Linear",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "SoftmaxCrossEntropy",
    "avg_pool2d",
    "avg_pool2d_backward",
    "book_model",
    "build_model",
    "kaiming_uniform",
    "lenet5",
    "log_softmax",
    "max_pool2d",
    "max_pool2d_backward",
]
