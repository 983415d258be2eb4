"""Softmax cross-entropy, numerically stable, with PyTorch's reduction convention.

For logits z of shape (N, K) and integer targets t of shape (N,)::

    log_softmax(z)_k = (z_k - max(z)) - log(sum_j exp(z_j - max(z)))
    loss_i = -log_softmax(z_i)_{t_i}
    mean:  L = sum_i loss_i / N      dL/dz_i = (softmax(z_i) - onehot(t_i)) / N
    sum:   L = sum_i loss_i          dL/dz_i =  softmax(z_i) - onehot(t_i)

Subtracting the row maximum keeps every exp() in (0, 1], so no overflow; the log of
the sum is >= 0, so no log(0). "mean" is PyTorch's ``CrossEntropyLoss()`` (1/N in the
gradient); "sum" is the book's dZ = a - y, for layers that divide dW by N themselves.
"""

from __future__ import annotations

import numpy as np

from ..spec import as_float_array
from .kernels import cross_entropy

REDUCTIONS = ("mean", "sum")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of logits of shape (N, K), in their dtype."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), every entry <= 0
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True, dtype=logits.dtype))


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy (PyTorch's ``nn.CrossEntropyLoss``).

    ``loss = criterion(logits, targets)`` with logits of shape (N, K) (float32 or
    float64) and targets of shape (N,) (integer class indices in [0, K)); then
    ``criterion.backward()`` returns dL/dlogits of shape (N, K) in the logits' dtype.
    """

    def __init__(self, reduction: str = "mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"SoftmaxCrossEntropy: reduction must be one of {REDUCTIONS}, "
                             f"got {reduction!r}")
        self.reduction = reduction
        self._grad = None

    def forward(self, logits, targets):
        """The loss, a scalar of the logits' dtype."""
        logits = as_float_array(logits, "logits", "SoftmaxCrossEntropy")
        targets = np.asarray(targets)
        if logits.ndim != 2:
            raise ValueError(f"SoftmaxCrossEntropy: logits must have shape (N, K), got "
                             f"{logits.shape}")
        n, k = logits.shape
        if targets.shape != (n,) or targets.dtype.kind not in "iu":
            raise ValueError(f"SoftmaxCrossEntropy: targets must be integers of shape ({n},) "
                             f"for logits {logits.shape}, got {targets.dtype} {targets.shape}")
        if n and (targets.min() < 0 or targets.max() >= k):
            raise ValueError(f"SoftmaxCrossEntropy: targets must lie in [0, {k}), got values "
                             f"in [{targets.min()}, {targets.max()}]")
        # loss and gradient in one Numba pass; the formulas are those of log_softmax
        total, grad = cross_entropy(np.ascontiguousarray(logits), np.ascontiguousarray(targets),
                                    self.reduction == "mean")  # scalar, (N, K)
        self._grad = grad
        if self.reduction == "sum":
            return total
        return total / logits.dtype.type(n)

    __call__ = forward

    def backward(self) -> np.ndarray:
        """dL/dlogits of shape (N, K) for the last forward call (computed by it; the same
        array on every call)."""
        if self._grad is None:
            raise ValueError("SoftmaxCrossEntropy.backward called before forward")
        return self._grad
