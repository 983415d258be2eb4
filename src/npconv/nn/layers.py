"""Conv2d, Linear, ReLU, Flatten and Dropout: forward and backward side by side.

Gradient convention (PyTorch's, the default): a layer returns exact gradients
dW = sum over the batch, and the loss with mean reduction puts 1/N into dZ. The book
(14.5.1 ``backward_dw_simple``) instead divides dW and dB by N inside the layer and lets
the loss pass dZ = softmax - onehot undivided: ``Conv2d(..., grad_convention="book")``
does the former; pair it with ``SoftmaxCrossEntropy(reduction="sum")`` to get the same
updates as the PyTorch convention.
"""

from __future__ import annotations

import math

import numpy as np

from ..functional import conv2d, conv2d_backward
from ..spec import as_float_array, positive_pair
from .init import as_generator, default_bias, kaiming_uniform
from .kernels import relu, relu_backward
from .module import Module, Parameter

GRAD_CONVENTIONS = ("pytorch", "book")


def _check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"layer dtype must be float32 or float64, got {dtype}")
    return dtype


def _check_input(x, expected: np.dtype, who: str) -> np.ndarray:
    x = as_float_array(x, "input", who)
    if x.dtype != expected:
        raise TypeError(f"{who}: input dtype {x.dtype} does not match the layer's parameters "
                        f"({expected}); convert with .astype(np.{expected})")
    return x


def _init_weight_and_bias(layer, shape, dtype, rng, bias: bool) -> None:
    """PyTorch's default initialisation of a weight of ``shape`` (kaiming-uniform) and,
    with ``bias``, its bias; both registered as the layer's parameters."""
    layer.weight = Parameter(kaiming_uniform(shape, dtype, rng))
    layer._parameters["weight"] = layer.weight
    layer.bias = Parameter(default_bias(shape, dtype, rng)) if bias else None
    if bias:
        layer._parameters["bias"] = layer.bias


class Conv2d(Module):
    """2-D convolution layer on :func:`npconv.conv2d` (PyTorch's ``nn.Conv2d``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), "valid" or "same"
    groups : int
    bias : bool
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
    algorithm : {"auto", "naive", "transpose", "im2col", "jit", "winograd"}
        ``"winograd"`` runs only 3x3 kernels with stride 1 (any dilation).
        Passed to the functional API for the forward and backward passes.
    grad_convention : {"pytorch", "book"}
        "book" divides dW and dB by the batch size N (see the module docstring).
    dtype : float32 or float64
    rng : Generator, int or None
        Seeds the kaiming-uniform initialisation.

    Shapes: x of shape (N, C_in, H, W) -> y of shape (N, C_out, OH, OW),
    ``OH = (H + 2P - D*(KH-1) - 1) // S + 1``. Parameters ``weight`` of shape
    (C_out, C_in/groups, KH, KW) and ``bias`` of shape (C_out,).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 *, algorithm: str = "auto", grad_convention: str = "pytorch",
                 dtype=np.float32, rng=None):
        super().__init__()
        if grad_convention not in GRAD_CONVENTIONS:
            raise ValueError(f"Conv2d: grad_convention must be one of {GRAD_CONVENTIONS}, "
                             f"got {grad_convention!r}")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"Conv2d: {name} must be a positive integer, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        kh, kw = positive_pair(kernel_size, "kernel_size", "Conv2d")
        dtype, rng = _check_dtype(dtype), as_generator(rng)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.padding_mode = groups, padding_mode
        self.algorithm, self.grad_convention = algorithm, grad_convention
        shape = (out_channels, in_channels // groups, kh, kw)
        _init_weight_and_bias(self, shape, dtype, rng, bias)
        self._x = None

    def _conv_args(self):
        return (self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x):
        x = _check_input(x, self.weight.data.dtype, "Conv2d")
        self._x = x
        b = self.bias.data if self.bias is not None else None
        return conv2d(x, self.weight.data, b, *self._conv_args(),
                      padding_mode=self.padding_mode, algorithm=self.algorithm)

    def backward(self, grad_output, *, input_grad=True):
        mask = (bool(input_grad), True, self.bias is not None)
        dx, dw, db = conv2d_backward(self._x, self.weight.data, grad_output,
                                     *self._conv_args(), padding_mode=self.padding_mode,
                                     output_mask=mask, algorithm=self.algorithm)
        if self.grad_convention == "book":  # the book's layer: dW /= N, dB /= N
            n = self._x.shape[0] if self._x.ndim == 4 else 1
            dw /= n
            if db is not None:
                db /= n
        self.weight.grad = dw
        if self.bias is not None:
            self.bias.grad = db
        return dx

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, algorithm={self.algorithm!r}")


class Linear(Module):
    """``y = x @ W.T + b`` (PyTorch's ``nn.Linear``).

    x of shape (N, in_features) -> y of shape (N, out_features); ``weight`` of shape
    (out_features, in_features), ``bias`` of shape (out_features,). Kaiming-uniform
    initialisation as PyTorch's, seeded by ``rng``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype=np.float32, rng=None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"Linear: {name} must be a positive integer, got {v!r}")
        dtype, rng = _check_dtype(dtype), as_generator(rng)
        self.in_features, self.out_features = in_features, out_features
        shape = (out_features, in_features)
        _init_weight_and_bias(self, shape, dtype, rng, bias)
        self._x = None

    def forward(self, x):
        x = _check_input(x, self.weight.data.dtype, "Linear")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear: input of shape {x.shape} does not match "
                             f"(N, {self.in_features}) (weight {self.weight.data.shape})")
        self._x = x
        y = x @ self.weight.data.T  # (N, out_features)
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_output, *, input_grad=True):
        g = grad_output  # (N, out_features)
        self.weight.grad = g.T @ self._x  # (out_features, in_features)
        if self.bias is not None:
            self.bias.grad = g.sum(axis=0, dtype=g.dtype)
        return g @ self.weight.data if input_grad else None  # (N, in_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ReLU(Module):
    """``max(x, 0)`` (NaN stays NaN); its gradient passes where the output is not <= 0,
    as PyTorch's. One Numba pass each way (:mod:`.kernels`)."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        x = as_float_array(x, "input", "ReLU")
        self._y = relu(x)  # of the shape and dtype of x
        return self._y

    def backward(self, grad_output, *, input_grad=True):
        if not input_grad:
            return None
        if np.shape(grad_output) != self._y.shape:
            raise ValueError(f"ReLU: grad_output of shape {np.shape(grad_output)} does not "
                             f"match the output {self._y.shape}")
        return relu_backward(grad_output, self._y)


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W): dimensions ``start_dim`` .. last merged."""

    def __init__(self, start_dim: int = 1):
        super().__init__()
        self.start_dim = start_dim
        self._shape = None

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim <= self.start_dim:
            raise ValueError(f"Flatten: input of shape {x.shape} has no dimension "
                             f"{self.start_dim} to flatten from")
        self._shape = x.shape
        # the merged size spelt out: -1 is ambiguous when the batch is empty
        merged = math.prod(x.shape[self.start_dim:])
        return x.reshape(*x.shape[:self.start_dim], merged)  # (N, C*H*W)

    def backward(self, grad_output, *, input_grad=True):
        return grad_output.reshape(self._shape) if input_grad else None  # (N, C, H, W)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}"


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale
    the rest by ``1/(1-p)``; the identity in eval mode.

    ``rng`` (Generator, int seed or None) draws the masks; its state is part of a
    training checkpoint, so a resumed run draws the same masks.
    """

    def __init__(self, p: float = 0.5, *, rng=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.rng = as_generator(rng)
        self._mask = None

    def forward(self, x):
        x = as_float_array(x, "input", "Dropout")
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.p
        scale = x.dtype.type(0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p))
        self._mask = keep * scale  # of the shape and dtype of x
        return x * self._mask

    def backward(self, grad_output, *, input_grad=True):
        if not input_grad:
            return None
        return grad_output if self._mask is None else grad_output * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"

