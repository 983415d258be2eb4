"""Max and average pooling: the functional API, its one dispatch point, and the layers.

Three interchangeable forms, as in the book's pooling section and its benchmark:

* ``"naive"`` (:mod:`.pool_naive`): loops over output pixels, vectorised over N and C;
  the readable reference.
* ``"im2col"`` (:mod:`.pool_im2col`): one strided copy per kernel tap builds columns
  of shape (N, C, KH*KW, OH, OW), reduced along the tap axis; backward scatters back
  tap by tap (col2im).
* ``"jit"`` (:mod:`.pool_jit`): Numba kernels over (sample, channel) planes, on one
  thread for small inputs and on all of them for large ones.

``"auto"`` is ``"jit"`` (:func:`choose`).

Semantics are PyTorch's (``ceil_mode=False``, no dilation): padding counts as -inf for
max pooling and as zeros for average pooling, and must be at most half the kernel; max
pooling takes the first maximum of a window in row-major order, and a NaN wins (the
last one, as in PyTorch). Internally each window's winner is kept as its tap
``u*KW + v`` (one byte); the public indices are flat positions ``row * W + col`` in the
input plane, as ``torch.nn.functional.max_pool2d(..., return_indices=True)`` gives them.

Notation::

    x (N, C, H, W) -> y (N, C, OH, OW),  OH = (H + 2*P_h - KH) // S_h + 1
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..spec import as_float_array, int_pair, positive_pair
from . import pool_im2col, pool_jit, pool_naive
from .module import Module

POOL_ALGORITHMS = ("naive", "im2col", "jit")
_MODULES = {"naive": pool_naive, "im2col": pool_im2col, "jit": pool_jit}


@dataclass(frozen=True)
class PoolSpec:
    """The resolved geometry of one pooling (see the module docstring)."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int

    @cached_property  # the kernels' wrappers ask for these on every call
    def oh(self) -> int:
        return (self.h + 2 * self.ph - self.kh) // self.sh + 1

    @cached_property
    def ow(self) -> int:
        return (self.w + 2 * self.pw - self.kw) // self.sw + 1

    @cached_property
    def tap_dtype(self) -> np.dtype:
        """Integer type of a window's tap index ``u*KW + v``: uint8 when it fits."""
        return np.dtype(np.uint8 if self.kh * self.kw <= 256 else np.int32)

    @cached_property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @cached_property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.oh, self.ow)


def plan_pool(x_shape, kernel_size, stride, padding, who: str) -> PoolSpec:
    """Validate a pooling's arguments against the input shape (N, C, H, W)."""
    if len(x_shape) != 4:
        raise ValueError(f"{who}: expected input of shape (N, C, H, W), got {tuple(x_shape)}")
    kh, kw = positive_pair(kernel_size, "kernel_size", who)
    sh, sw = (kh, kw) if stride is None else positive_pair(stride, "stride", who)
    ph, pw = int_pair(padding, "padding", who)
    if ph < 0 or pw < 0 or 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"{who}: pad should be at most half of kernel size, but got "
                         f"padding=({ph}, {pw}) and kernel_size=({kh}, {kw})")
    spec = PoolSpec(*(int(v) for v in x_shape), kh, kw, sh, sw, ph, pw)
    if spec.oh < 1 or spec.ow < 1:
        raise ValueError(f"{who}: input of shape {tuple(x_shape)} is too small for kernel "
                         f"({kh}, {kw}) with padding ({ph}, {pw}): output ({spec.oh}, "
                         f"{spec.ow})")
    return spec


def choose(spec: PoolSpec | None) -> str:
    """``auto``'s form: the Numba kernels, for every input.

    Measured with benchmarks/pooling.py (forward + backward, float32): on the book's
    (8, 3, 7, 6) 23 us per iteration against im2col's 230 us; on LeNet-5's
    (64, 6, 28, 28) 0.4-0.5 ms against 5.6 ms. Small inputs run on one thread (see
    :mod:`.pool_jit`), so they no longer pay for waking the thread pool.
    """
    return "jit"


def _impl(algorithm: str, who: str, spec: PoolSpec | None = None):
    name = choose(spec) if algorithm == "auto" else algorithm
    if name not in _MODULES:
        raise ValueError(f"{who}: algorithm must be 'auto' or one of {POOL_ALGORITHMS}, "
                         f"got {algorithm!r}")
    return _MODULES[name]


def _check_grad(grad_output, spec: PoolSpec, dtype, who: str) -> np.ndarray:
    grad_output = as_float_array(grad_output, "grad_output", who)
    if grad_output.shape != spec.y_shape or (dtype is not None and grad_output.dtype != dtype):
        raise ValueError(f"{who}: grad_output of shape {grad_output.shape} and dtype "
                         f"{grad_output.dtype} does not match the output {spec.y_shape}"
                         + (f" of dtype {dtype}" if dtype is not None else ""))
    return grad_output


def taps_to_indices(taps: np.ndarray, s: PoolSpec) -> np.ndarray:
    """Window taps ``u*KW + v`` -> flat input positions ``row*W + col`` (int64)."""
    u, v = np.divmod(taps.astype(np.int64), s.kw)
    rows = u + (np.arange(s.oh, dtype=np.int64) * s.sh - s.ph)[:, None]
    cols = v + (np.arange(s.ow, dtype=np.int64) * s.sw - s.pw)[None, :]
    return rows * s.w + cols  # (N, C, OH, OW)


def indices_to_taps(indices: np.ndarray, s: PoolSpec, who: str) -> np.ndarray:
    """Flat input positions -> window taps; ValueError if one lies outside its window."""
    rows, cols = np.divmod(indices.astype(np.int64), s.w)
    u = rows - (np.arange(s.oh, dtype=np.int64) * s.sh - s.ph)[:, None]
    v = cols - (np.arange(s.ow, dtype=np.int64) * s.sw - s.pw)[None, :]
    inside = (u >= 0) & (u < s.kh) & (v >= 0) & (v < s.kw) & (indices >= 0) & (
        indices < s.h * s.w)
    if not inside.all():
        raise ValueError(f"{who}: indices must point inside their pooling windows (kernel "
                         f"({s.kh}, {s.kw}), stride ({s.sh}, {s.sw}), padding ({s.ph}, "
                         f"{s.pw}), input plane {s.h}x{s.w})")
    return (u * s.kw + v).astype(s.tap_dtype)


def max_pool2d_taps(x: np.ndarray, spec: PoolSpec, algorithm: str = "auto"):
    """(y, taps) for a validated ``spec``: the winning tap ``u*KW + v`` of each window."""
    return _impl(algorithm, "max_pool2d", spec).max_forward(x, spec)


def max_pool2d_taps_backward(grad_output: np.ndarray, taps: np.ndarray, spec: PoolSpec,
                             algorithm: str = "auto") -> np.ndarray:
    """dx of shape (N, C, H, W) from the taps of :func:`max_pool2d_taps`."""
    return _impl(algorithm, "max_pool2d_backward", spec).max_backward(grad_output, taps, spec)


def max_pool2d(x, kernel_size, stride=None, padding=0, *, return_indices=False,
               algorithm="auto"):
    """Max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    kernel_size, stride, padding : int or (int, int)
        ``stride`` defaults to ``kernel_size``; padding at most half the kernel.
    return_indices : bool
        Also return where each maximum was.
    algorithm : {"auto", "naive", "im2col", "jit"}

    Returns
    -------
    y : ndarray of shape (N, C, OH, OW), the dtype of ``x``
    indices : int64 ndarray of shape (N, C, OH, OW), when ``return_indices``
        Flat position ``row * W + col`` of each maximum in its input plane.
    """
    x = as_float_array(x, "input", "max_pool2d")
    spec = plan_pool(x.shape, kernel_size, stride, padding, "max_pool2d")
    y, taps = max_pool2d_taps(x, spec, algorithm)
    return (y, taps_to_indices(taps, spec)) if return_indices else y


def max_pool2d_backward(grad_output, indices, input_shape, kernel_size, stride=None,
                        padding=0, *, algorithm="auto"):
    """dL/dx of :func:`max_pool2d`: each output's gradient goes to its maximum's position.

    Parameters
    ----------
    grad_output : ndarray of shape (N, C, OH, OW)
    indices : int64 ndarray of shape (N, C, OH, OW), from ``max_pool2d(...,
        return_indices=True)`` (or PyTorch's)
    input_shape : (N, C, H, W)

    Returns
    -------
    ndarray of shape (N, C, H, W), the dtype of ``grad_output``
    """
    who = "max_pool2d_backward"
    spec = plan_pool(tuple(input_shape), kernel_size, stride, padding, who)
    grad_output = _check_grad(grad_output, spec, None, who)
    indices = np.asarray(indices)
    if indices.shape != spec.y_shape or indices.dtype.kind not in "iu":
        raise ValueError(f"{who}: indices of shape {indices.shape} and dtype {indices.dtype} "
                         f"do not match the output {spec.y_shape} (integer)")
    taps = indices_to_taps(indices, spec, who)
    return max_pool2d_taps_backward(grad_output, taps, spec, algorithm)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True, *,
               algorithm="auto"):
    """Average pooling, as ``torch.nn.functional.avg_pool2d``.

    ``count_include_pad=True`` divides every window by KH*KW; False divides by the
    number of input pixels inside the window.

    Returns
    -------
    ndarray of shape (N, C, OH, OW), the dtype of ``x``
    """
    x = as_float_array(x, "input", "avg_pool2d")
    spec = plan_pool(x.shape, kernel_size, stride, padding, "avg_pool2d")
    return _impl(algorithm, "avg_pool2d", spec).avg_forward(x, spec, bool(count_include_pad))


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        count_include_pad=True, *, algorithm="auto"):
    """dL/dx of :func:`avg_pool2d`, of shape ``input_shape`` (N, C, H, W)."""
    who = "avg_pool2d_backward"
    spec = plan_pool(tuple(input_shape), kernel_size, stride, padding, who)
    grad_output = _check_grad(grad_output, spec, None, who)
    return _impl(algorithm, who, spec).avg_backward(grad_output, spec, bool(count_include_pad))


class MaxPool2d(Module):
    """Max pooling layer (PyTorch's ``nn.MaxPool2d``, ``ceil_mode=False``).

    x of shape (N, C, H, W) -> y of shape (N, C, OH, OW); see :func:`max_pool2d`.
    """

    def __init__(self, kernel_size, stride=None, padding=0, *, algorithm: str = "auto"):
        super().__init__()
        _impl(algorithm, "MaxPool2d")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.algorithm = algorithm
        self._taps = self._spec = self._planned = None

    def forward(self, x):
        x = as_float_array(x, "input", "MaxPool2d")
        key = (x.shape, self.kernel_size, self.stride, self.padding)
        if key != self._planned:  # a training loop sees one or two shapes: plan once each
            self._spec = plan_pool(x.shape, self.kernel_size, self.stride, self.padding,
                                   "MaxPool2d")
            self._planned = key
        y, self._taps = max_pool2d_taps(x, self._spec, self.algorithm)
        return y

    def backward(self, grad_output, *, input_grad=True):
        if not input_grad:
            return None
        grad_output = _check_grad(grad_output, self._spec, None, "MaxPool2d.backward")
        return max_pool2d_taps_backward(grad_output, self._taps, self._spec, self.algorithm)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, algorithm={self.algorithm!r}")


class AvgPool2d(Module):
    """Average pooling layer (PyTorch's ``nn.AvgPool2d``, ``ceil_mode=False``).

    x of shape (N, C, H, W) -> y of shape (N, C, OH, OW); see :func:`avg_pool2d`.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad: bool = True,
                 *, algorithm: str = "auto"):
        super().__init__()
        _impl(algorithm, "AvgPool2d")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.count_include_pad, self.algorithm = count_include_pad, algorithm
        self._shape = None

    def forward(self, x):
        self._shape = np.shape(x)
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                          self.count_include_pad, algorithm=self.algorithm)

    def backward(self, grad_output, *, input_grad=True):
        if not input_grad:
            return None
        return avg_pool2d_backward(grad_output, self._shape, self.kernel_size, self.stride,
                                   self.padding, self.count_include_pad,
                                   algorithm=self.algorithm)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, algorithm={self.algorithm!r}")
