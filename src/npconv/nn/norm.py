"""Batch normalisation (PyTorch's ``BatchNorm1d`` and ``BatchNorm2d``).

For each channel, over the batch (and the spatial positions)::

    training:  mu = mean(x),  var = mean((x - mu)^2)               (biased)
               running_mean <- (1 - m) running_mean + m mu
               running_var  <- (1 - m) running_var  + m var * M / (M - 1)   (unbiased)
    eval:      mu, var = running_mean, running_var
    x_hat = (x - mu) / sqrt(var + eps),   y = gamma * x_hat + beta

where M is the number of values per channel and m the momentum (None: the cumulative
average, m = 1 / num_batches_tracked). Backward, with g = dL/dy and sums over the M
values of a channel::

    dgamma = sum(g * x_hat),  dbeta = sum(g)
    training:  dx = gamma / sqrt(var + eps) * (g - dbeta / M - x_hat * dgamma / M)
    eval:      dx = gamma / sqrt(var + eps) * g
"""

from __future__ import annotations

import numpy as np

from ..spec import as_float_array
from .kernels import batch_norm_backward, batch_normalize, batch_stats
from .module import Module, Parameter


class _BatchNorm(Module):
    _ndims: tuple[int, ...] = ()
    _shape_text = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, *, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, int | np.integer) \
                or num_features < 1:
            raise ValueError(f"{name}: num_features must be a positive integer, "
                             f"got {num_features!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{name}: dtype must be float32 or float64, got {dtype}")
        self.num_features, self.eps = num_features, eps
        self.momentum, self.affine = momentum, affine
        c = num_features
        if affine:
            self.weight = Parameter(np.ones(c, dtype=dtype))
            self.bias = Parameter(np.zeros(c, dtype=dtype))
            self._parameters.update(weight=self.weight, bias=self.bias)
        self.running_mean = np.zeros(c, dtype=dtype)
        self.running_var = np.ones(c, dtype=dtype)
        self.num_batches_tracked = np.zeros((), dtype=np.int64)
        self._buffers.update(running_mean=self.running_mean, running_var=self.running_var,
                             num_batches_tracked=self.num_batches_tracked)
        self._cache = None

    def _check(self, x) -> np.ndarray:
        name = type(self).__name__
        x = as_float_array(x, "input", name)
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{name}: expected input of shape {self._shape_text} with "
                             f"C = {self.num_features}, got {x.shape}")
        if x.dtype != self.running_mean.dtype:
            raise TypeError(f"{name}: input dtype {x.dtype} does not match the layer's "
                            f"({self.running_mean.dtype})")
        return x

    @staticmethod
    def _axes(x: np.ndarray) -> tuple[int, ...]:
        return (0, *range(2, x.ndim))  # every axis but the channel axis

    @staticmethod
    def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
        return v.reshape((1, -1) + (1,) * (ndim - 2))  # (1, C[, 1, 1]) for broadcasting

    def _fused(self, x: np.ndarray) -> bool:
        """Whether the one-pass Numba kernels take ``x``: (N, C), C-contiguous, affine
        (the book model's BatchNorm1d); other inputs take the NumPy lines."""
        return x.ndim == 2 and self.affine and x.flags.c_contiguous

    def forward(self, x):
        x = self._check(x)
        dtype, axes = x.dtype, self._axes(x)
        count = x.size // self.num_features  # M: values per channel
        fused = self._fused(x)
        if self.training:
            if count < 2:
                raise ValueError(f"{type(self).__name__}: expected more than 1 value per "
                                 f"channel when training, got input of shape {x.shape}")
            if fused:
                mean, var = batch_stats(x)  # (C,) each, the lines below in two passes
            else:
                mean = x.mean(axis=axes, dtype=dtype)  # (C,)
                centred = x - self._per_channel(mean, x.ndim)
                var = np.mean(centred * centred, axis=axes, dtype=dtype)  # (C,) biased
            self.num_batches_tracked += 1
            m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                 else self.momentum)
            m = dtype.type(m)
            self.running_mean[...] = (1 - m) * self.running_mean + m * mean
            self.running_var[...] = (1 - m) * self.running_var + m * var * dtype.type(
                count / (count - 1))
        else:
            mean, var = self.running_mean, self.running_var
            if not fused:
                centred = x - self._per_channel(mean, x.ndim)
        inv_std = (1 / np.sqrt(var + dtype.type(self.eps))).astype(dtype)  # (C,)
        if fused:  # x_hat and y in one pass, as below
            x_hat, y = batch_normalize(x, mean, inv_std, self.weight.data, self.bias.data)
            self._cache = (x_hat, inv_std, self.training)
            return y
        x_hat = centred * self._per_channel(inv_std, x.ndim)
        self._cache = (x_hat, inv_std, self.training)
        if not self.affine:
            return x_hat
        return (x_hat * self._per_channel(self.weight.data, x.ndim)
                + self._per_channel(self.bias.data, x.ndim))

    def backward(self, grad_output, *, input_grad=True):
        x_hat, inv_std, training = self._cache
        g = grad_output
        if g.shape != x_hat.shape:
            raise ValueError(f"{type(self).__name__}: grad_output of shape {g.shape} does "
                             f"not match the output {x_hat.shape}")
        axes, ndim, dtype = self._axes(g), g.ndim, g.dtype
        if (self._fused(g) and input_grad and g.dtype == x_hat.dtype
                and x_hat.flags.c_contiguous):  # every line below in two passes
            dbeta, dgamma, dx = batch_norm_backward(g, x_hat, inv_std * self.weight.data,
                                                    training)
            self.weight.grad, self.bias.grad = dgamma, dbeta
            return dx
        dbeta = g.sum(axis=axes, dtype=dtype)  # (C,)
        dgamma = (g * x_hat).sum(axis=axes, dtype=dtype)  # (C,)
        if self.affine:
            self.weight.grad, self.bias.grad = dgamma, dbeta
        if not input_grad:
            return None
        scale = inv_std * self.weight.data if self.affine else inv_std  # (C,)
        if not training:
            return g * self._per_channel(scale, ndim)
        count = dtype.type(g.size // self.num_features)
        dx = (g - self._per_channel(dbeta / count, ndim)
              - x_hat * self._per_channel(dgamma / count, ndim))
        return dx * self._per_channel(scale, ndim)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of x of shape (N, C) or (N, C, L), per channel C.

    Parameters ``weight`` (gamma) and ``bias`` (beta) of shape (C,); buffers
    ``running_mean``, ``running_var`` of shape (C,) and ``num_batches_tracked`` (int64
    scalar), named as in PyTorch.
    """

    _ndims = (2, 3)
    _shape_text = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of x of shape (N, C, H, W), per channel C (see BatchNorm1d)."""

    _ndims = (4,)
    _shape_text = "(N, C, H, W)"
