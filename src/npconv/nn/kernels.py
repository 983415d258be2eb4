"""Element-wise Numba kernels of the layers and optimisers (one pass, no temporaries).

They see C-contiguous arrays only (callers make sure) and are cached on disk.
NumPy would need two or three passes and as many temporary arrays for each of them.

Each element-wise kernel comes twice, serial and parallel, and :func:`parallel`
chooses: waking Numba's OpenMP threads (which sleep between kernels once their short
spin, ``GOMP_SPINCOUNT`` as npconv sets it, has run out) costs 10-100 us, more than a
serial pass over everything LeNet-5 holds (its largest activation, (64, 6, 28, 28), is
0.3M elements: ~35 us for one ReLU pass on one core). Measured on 2 cores, one thread
was as fast as two up to 4M elements; :data:`PARALLEL_MIN` leaves the threads to much
larger arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._numba import serial_and_parallel

# Arrays of at least this many elements are worth waking the thread pool for.
PARALLEL_MIN = 1 << 22


def parallel(size: int) -> bool:
    """Whether an element-wise pass over ``size`` elements should run on the threads."""
    return size >= PARALLEL_MIN


@njit(inline="always")
def _relu_value(v, zero):  # pragma: no cover - compiled
    return v if (v > 0) | (v != v) else zero  # NaN stays NaN, as in PyTorch


@njit(inline="always")
def _relu_grad_value(g, y, zero):  # pragma: no cover - compiled
    return zero if y <= 0 else g  # PyTorch's threshold_backward


def _relu(x, y):  # pragma: no cover - compiled
    zero = y.dtype.type(0)  # of the arrays' dtype: nothing widens to float64
    for i in prange(x.size):
        y[i] = _relu_value(x[i], zero)


def _relu_backward(grad_output, y, dx):  # pragma: no cover - compiled
    zero = dx.dtype.type(0)
    for i in prange(y.size):
        dx[i] = _relu_grad_value(grad_output[i], y[i], zero)


# (serial, parallel) per loop, each written once: index with parallel(size)
_RELU = {fn.__name__: serial_and_parallel(fn) for fn in (_relu, _relu_backward)}


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` of any shape, in the dtype of ``x``; NaN propagates.

    Always a new array: written in place (``x`` as its own output) the pass measured
    3x slower on (64, 6, 28, 28), as LLVM no longer vectorises it.
    """
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    kernel = _RELU["_relu"][parallel(x.size)]
    kernel(x.reshape(-1), y.reshape(-1))  # (N*...,) flat views
    return y


def relu_backward(grad_output: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/dx of ReLU from its output ``y``: the gradient where ``y`` is not <= 0."""
    grad_output, y = np.ascontiguousarray(grad_output), np.ascontiguousarray(y)
    dx = np.empty_like(grad_output)
    kernel = _RELU["_relu_backward"][parallel(y.size)]
    kernel(grad_output.reshape(-1), y.reshape(-1), dx.reshape(-1))  # flat views
    return dx


@njit(cache=True, error_model="numpy")
def _adam_kernel(data, grad, m, v, hyper):  # pragma: no cover - compiled
    beta1, one_minus_beta1, beta2, one_minus_beta2 = hyper[0], hyper[1], hyper[2], hyper[3]
    step_size, bias2_sqrt, eps, weight_decay = hyper[4], hyper[5], hyper[6], hyper[7]
    for i in range(data.size):
        g = grad[i] + weight_decay * data[i]
        m[i] = beta1 * m[i] + one_minus_beta1 * g
        v[i] = beta2 * v[i] + one_minus_beta2 * g * g
        data[i] -= step_size * (m[i] / (np.sqrt(v[i]) / bias2_sqrt + eps))


def adam_hyper(beta1, beta2, step_size, bias2_sqrt, eps, weight_decay, dtype) -> np.ndarray:
    """The scalars of one Adam step for :func:`adam_update`, shape (8,) in ``dtype``.

    ``1 - beta`` is computed in float64 and rounded once to ``dtype``; every product in the
    kernel is then in the parameters' dtype (float32 stays float32).
    """
    return np.array([beta1, 1 - beta1, beta2, 1 - beta2, step_size, bias2_sqrt, eps,
                     weight_decay], dtype=dtype)


def adam_update(data, grad, m, v, hyper: np.ndarray) -> None:
    """One Adam update of ``data``, ``m`` and ``v`` in place (:class:`npconv.optim.Adam`).

    ``data``, ``grad``, ``m`` and ``v`` must be C-contiguous, of one shape and dtype
    (they are updated through flat views); ``hyper`` comes from :func:`adam_hyper`.
    """
    _adam_kernel(data.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), hyper)


@njit(cache=True, error_model="numpy")
def _cross_entropy_kernel(logits, targets, grad, divisor):  # pragma: no cover - compiled
    total = grad.dtype.type(0)
    one = grad.dtype.type(1)
    for i in range(logits.shape[0]):
        row, grad_row, t = logits[i], grad[i], targets[i]  # (K,), (K,), class index
        top = row[0]
        for k in range(1, row.shape[0]):
            top = np.maximum(top, row[k])  # NaN-propagating
        sum_exp = grad.dtype.type(0)
        for k in range(row.shape[0]):
            sum_exp += np.exp(row[k] - top)  # every exponent <= 0: no overflow
        log_sum = np.log(sum_exp)  # >= 0: no log(0)
        for k in range(row.shape[0]):
            grad_row[k] = np.exp((row[k] - top) - log_sum) / divisor  # softmax / N or / 1
        grad_row[t] = (np.exp((row[t] - top) - log_sum) - one) / divisor
        total += log_sum - (row[t] - top)  # -log_softmax(z)_t
    return total


def cross_entropy(logits: np.ndarray, targets: np.ndarray, mean: bool):
    """Summed softmax cross-entropy and its gradient, in one pass (:mod:`.loss`).

    ``logits`` of shape (N, K), C-contiguous; ``targets`` of shape (N,), integers
    already checked to lie in [0, K). Returns (sum of the N losses in the logits'
    dtype, dL/dlogits of shape (N, K)) where L is the mean (``mean``) or the sum.
    """
    grad = np.empty_like(logits)
    divisor = logits.dtype.type(logits.shape[0] if mean else 1)
    total = _cross_entropy_kernel(logits, targets, grad, divisor)
    return logits.dtype.type(total), grad


# ---------------------------------------------------------------- BatchNorm on (N, C)
# The reductions run over the batch, row after row, as NumPy's ``x.mean(axis=0)`` of a
# C-contiguous array does, so they round the same way; each loop over C vectorises.
@njit(cache=True, error_model="numpy")
def _batch_stats_kernel(x, mean, var):  # pragma: no cover - compiled
    n, c = x.shape
    count = mean.dtype.type(n)
    mean[:] = 0
    for i in range(n):
        row = x[i]  # (C,)
        for k in range(c):
            mean[k] += row[k]
    for k in range(c):
        mean[k] /= count
    var[:] = 0
    for i in range(n):
        row = x[i]
        for k in range(c):
            d = row[k] - mean[k]
            var[k] += d * d
    for k in range(c):
        var[k] /= count


@njit(cache=True, error_model="numpy")
def _batch_normalize_kernel(x, mean, inv_std, weight, bias, x_hat, y):  # pragma: no cover
    for i in range(x.shape[0]):
        row, hat_row, y_row = x[i], x_hat[i], y[i]  # (C,) each
        for k in range(row.shape[0]):
            h = (row[k] - mean[k]) * inv_std[k]
            hat_row[k] = h
            y_row[k] = h * weight[k] + bias[k]


@njit(cache=True, error_model="numpy")
def _batch_norm_backward_kernel(g, x_hat, scale, dbeta, dgamma, dx,
                                training):  # pragma: no cover - compiled
    n, c = g.shape
    dbeta[:] = 0
    dgamma[:] = 0
    for i in range(n):
        g_row, hat_row = g[i], x_hat[i]  # (C,) each
        for k in range(c):
            dbeta[k] += g_row[k]
            dgamma[k] += g_row[k] * hat_row[k]
    count = g.dtype.type(n)
    for i in range(n):
        g_row, hat_row, dx_row = g[i], x_hat[i], dx[i]  # (C,) each
        for k in range(c):
            if training:
                dx_row[k] = (g_row[k] - dbeta[k] / count - hat_row[k] * (dgamma[k] / count)
                             ) * scale[k]
            else:
                dx_row[k] = g_row[k] * scale[k]


def batch_stats(x: np.ndarray):
    """Per-column mean and biased variance of ``x`` of shape (N, C), C-contiguous."""
    mean = np.empty(x.shape[1], dtype=x.dtype)
    var = np.empty(x.shape[1], dtype=x.dtype)
    _batch_stats_kernel(x, mean, var)
    return mean, var  # (C,) each


def batch_normalize(x, mean, inv_std, weight, bias):
    """``x_hat = (x - mean) * inv_std`` and ``y = x_hat * weight + bias`` in one pass;
    ``x`` of shape (N, C), C-contiguous, the rest of shape (C,). Returns (x_hat, y)."""
    x_hat, y = np.empty_like(x), np.empty_like(x)
    _batch_normalize_kernel(x, mean, inv_std, weight, bias, x_hat, y)
    return x_hat, y


def batch_norm_backward(g, x_hat, scale, training: bool):
    """(dbeta, dgamma, dx) of BatchNorm on (N, C) (formulas in :mod:`.norm`)."""
    dbeta = np.empty(g.shape[1], dtype=g.dtype)
    dgamma = np.empty(g.shape[1], dtype=g.dtype)
    dx = np.empty_like(g)
    _batch_norm_backward_kernel(g, x_hat, scale, dbeta, dgamma, dx, training)
    return dbeta, dgamma, dx
