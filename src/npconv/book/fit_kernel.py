"""``fit-kernel``: the 17.3.7 experiment, recovering a kernel from a picture and its image.

The book's setting, exactly (BOOK-NOTES.md):

* source x: an 80x80 grayscale picture in [0, 1] (:mod:`npconv.book.images`);
* target y = x * w_true (bias 0; the book: stride 1, no padding, so 78x78);
* w initialised from Normal(0, 0.1), ``--seed``;
* loss = sum((z - y)^2) / 2 / m, m = number of output pixels;
* dW = x correlated with (z - y) (formula 17.3 (11); :func:`npconv.grad.conv2d_weight`);
* w -= lr * dW / m with lr 0.5; stop when loss < 1e-7, or after 10000 iterations.

Then the kernel and the output of the *trained* kernel are compared with the target
(``allclose(atol=1e-2)``); the book compared the output of w_true with itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from ..algorithms import ALGORITHMS
from ..functional import conv2d
from ..grad import conv2d_weight
from .images import load_image, make_source

KERNELS = {
    "horizontal-edge": [[0, -1, 0], [0, 2, 0], [0, -1, 0]],  # the book's operator
    "vertical-edge": [[0, 0, 0], [-1, 2, -1], [0, 0, 0]],
    "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "box-blur": [[1 / 9] * 3] * 3,
}
PROGRESS_EVERY = 20  # iterations between progress callbacks


def parse_kernel(kernel) -> tuple[str, np.ndarray]:
    """A kernel name from :data:`KERNELS`, a list of rows, or text such as ``"0,-1,0;0,2,0;..."``.

    Text may also be a JSON list (``"[[0,-1,0],[0,2,0],[0,-1,0]]"``).

    Returns
    -------
    (str, ndarray of shape (KH, KW))
        A display name and the kernel as float64.

    Raises
    ------
    ValueError
        For an unknown name or a list that is not a rectangular matrix of finite numbers.
    """
    if isinstance(kernel, str):
        text = kernel.strip()
        if text in KERNELS:
            return text, np.array(KERNELS[text], dtype=np.float64)
        try:
            if text.startswith("["):
                rows = json.loads(text)
            elif any(ch.isdigit() for ch in text):
                rows = [[float(v) for v in row.replace(",", " ").split()]
                        for row in text.split(";") if row.strip()]
            else:
                raise ValueError
        except (ValueError, json.JSONDecodeError):
            raise ValueError(
                f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)} or a matrix such "
                f"as '0,-1,0; 0,2,0; 0,-1,0'") from None
        name = "custom"
    else:
        rows, name = kernel, "custom"
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"the kernel must be a rectangular matrix of numbers, got {kernel!r}"
                         ) from None
    if matrix.ndim != 2 or matrix.size == 0 or not np.all(np.isfinite(matrix)):
        raise ValueError(f"the kernel must be a non-empty 2-D matrix of finite numbers, "
                         f"got {kernel!r}")
    return name, matrix


@dataclass
class FitResult:
    """What :func:`fit_kernel` found.

    Attributes
    ----------
    kernel_name : str
    w_true, w_init, w_result : ndarray of shape (KH, KW)
    history : ndarray of shape (iterations + 1,)
        The loss before each update; the last entry is the loss of ``w_result``.
    iterations : int
        Updates made (the book's printed ``i`` when it stopped: 3460 for its circle).
    final_loss : float
    converged, diverged : bool
        The loss fell below ``tol``; the loss blew up (``lr`` too large for the picture).
    kernel_close, output_close : bool
        ``allclose(w_result, w_true, atol)`` and ``allclose(x * w_result, y, atol)``.
    source : ndarray of shape (H, W)
    target, output : ndarray of shape (OH, OW)
        y = x * w_true and z = x * w_result.
    eigenvalues : ndarray of shape (KH*KW,)
        Of the loss's Hessian ``P.T @ P / m``; see :mod:`npconv.book.images`.
    seconds : float
        Training time (without the Hessian).
    settings : dict
        The arguments, resolved.
    """

    kernel_name: str
    w_true: np.ndarray
    w_init: np.ndarray
    w_result: np.ndarray
    history: np.ndarray
    iterations: int
    final_loss: float
    converged: bool
    diverged: bool
    kernel_close: bool
    output_close: bool
    source: np.ndarray
    target: np.ndarray
    output: np.ndarray
    eigenvalues: np.ndarray
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Converged, with the kernel and the trained output within ``atol``."""
        return self.converged and self.kernel_close and self.output_close

    def to_dict(self) -> dict:
        """JSON-ready summary (the pictures are left out; the loss history is kept)."""
        return {
            "kernel": self.kernel_name, "w_true": self.w_true.tolist(),
            "w_init": self.w_init.tolist(), "w_result": self.w_result.tolist(),
            "iterations": self.iterations, "final_loss": self.final_loss,
            "converged": self.converged, "diverged": self.diverged,
            "kernel_close": self.kernel_close, "output_close": self.output_close,
            "passed": self.passed, "seconds": self.seconds,
            "eigenvalues": self.eigenvalues.tolist(), "settings": self.settings,
            "history": self.history.tolist(),
        }


def hessian_eigenvalues(x: np.ndarray, kernel_shape, conv_kwargs: dict) -> np.ndarray:
    """Eigenvalues of the loss's Hessian ``H = P.T @ P / m``, computed with the library.

    Column k of H is the weight gradient of the output of the k-th unit kernel:
    ``H e_k = conv2d_weight(x, conv2d(x, e_k)) / m``.

    Parameters
    ----------
    x : ndarray of shape (1, 1, H, W)
    kernel_shape : (int, int)

    Returns
    -------
    ndarray of shape (KH*KW,), ascending
    """
    kh, kw = kernel_shape
    columns = []
    for k in range(kh * kw):
        unit = np.zeros((1, 1, kh, kw), dtype=x.dtype)
        unit.flat[k] = 1.0
        z = conv2d(x, unit, **conv_kwargs)  # (1, 1, OH, OW)
        columns.append(conv2d_weight(x, unit.shape, z, **conv_kwargs).ravel() / z.size)
    hessian = np.stack(columns, axis=1)  # (KH*KW, KH*KW)
    return np.linalg.eigvalsh((hessian + hessian.T) / 2)


def fit_kernel(kernel="horizontal-edge", *, image=None, source="shapes", seed=0, lr=0.5,
               tol=1e-7, max_iter=10000, stride=1, padding=0, dilation=1, algorithm="auto",
               atol=1e-2, progress=None) -> FitResult:
    """Recover a known kernel from a picture and its convolution (17.3.7).

    Parameters
    ----------
    kernel : str or list of lists
        A name of :data:`KERNELS` (default the book's horizontal-edge operator
        ``[[0,-1,0],[0,2,0],[0,-1,0]]``), or a matrix (any KH x KW).
    image : path or ndarray of shape (H, W), optional
        A picture file (made grayscale and 80x80) or an array in [0, 1] used as is;
        default: the drawn picture ``source``.
    source : {"shapes", "circle", "soft-disc"}
        The drawn picture (:func:`npconv.book.images.make_source`).
    seed : int
        For w's initialisation from Normal(0, 0.1).
    lr, tol, max_iter : float, float, int
        Learning rate (0.5), the loss to stop at (1e-7), the most updates (10000).
    stride, padding, dilation
        Of the convolution, as in :func:`npconv.conv2d` (the book: 1, 0, 1).
    algorithm : {"auto", "naive", "transpose", "im2col", "jit"}
        Used for the forward pass and for dW ("naive" takes minutes).
    atol : float
        Tolerance of the two ``allclose`` checks (1e-2).
    progress : callable (iteration, loss) -> None, optional
        Called every :data:`PROGRESS_EVERY` iterations and once at the end.

    Returns
    -------
    FitResult
    """
    name, w_true = parse_kernel(kernel)
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}, expected 'auto' or one of "
                         f"{', '.join(ALGORITHMS)}")
    for label, value in (("lr", lr), ("tol", tol), ("atol", atol)):
        if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
            raise ValueError(f"fit_kernel: {label} must be a positive number, got {value!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"fit_kernel: max_iter must be a positive integer, got {max_iter!r}")
    if image is None:
        picture, origin = make_source(source), source
    elif isinstance(image, np.ndarray):
        if image.ndim != 2 or not np.issubdtype(image.dtype, np.number):
            raise ValueError(f"fit_kernel: image must be a 2-D array, got shape {image.shape}")
        picture, origin = image.astype(np.float64), "array"
    else:
        picture, origin = load_image(image), str(image)

    x = picture[None, None]  # (1, 1, H, W)
    w_shape = (1, 1, *w_true.shape)
    conv_kwargs = dict(stride=stride, padding=padding, dilation=dilation, algorithm=algorithm)
    y = conv2d(x, w_true.reshape(w_shape), **conv_kwargs)  # (1, 1, OH, OW), validates all
    m = y.size  # output pixels
    eigenvalues = hessian_eigenvalues(x, w_true.shape, conv_kwargs)

    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.1, size=w_shape)  # (1, 1, KH, KW)
    w_init = w[0, 0].copy()
    history = []
    converged = diverged = False
    start = time.perf_counter()
    for i in range(max_iter + 1):
        z = conv2d(x, w, **conv_kwargs)  # forward: z = x * w
        delta = z - y  # dLoss/dz times m
        loss = float(np.sum(delta * delta) / 2 / m)
        history.append(loss)
        if progress is not None and i % PROGRESS_EVERY == 0:
            progress(i, loss)
        if loss < tol:
            converged = True
            break
        if not np.isfinite(loss) or loss > 1e6 * history[0]:
            diverged = True
            break
        if i == max_iter:
            break
        grad_w = conv2d_weight(x, w_shape, delta, **conv_kwargs)  # dW = x * (z - y)
        w -= lr * grad_w / m
    seconds = time.perf_counter() - start
    if progress is not None:
        progress(i, loss)

    output = z[0, 0]  # z of the final w (computed at the top of the last iteration)
    with np.errstate(invalid="ignore"):
        kernel_close = bool(np.allclose(w[0, 0], w_true, atol=atol))
        output_close = bool(np.allclose(output, y[0, 0], atol=atol))
    settings = dict(kernel=name, image=origin, seed=seed, lr=lr, tol=tol, max_iter=max_iter,
                    stride=stride, padding=padding, dilation=dilation, algorithm=algorithm,
                    atol=atol, source_shape=list(picture.shape), output_shape=list(y.shape[2:]))
    return FitResult(name, w_true, w_init, w[0, 0].copy(), np.array(history), i, loss,
                     converged, diverged, kernel_close, output_close, picture, y[0, 0].copy(),
                     output.copy(), eigenvalues, seconds, settings)


# --------------------------------------------------------------------------- rendering
def describe_conditioning(result: FitResult) -> list[str]:
    """Why it took that many iterations: the Hessian's eigenvalues, stability and rate."""
    lr = result.settings["lr"]
    low, high = float(result.eigenvalues[0]), float(result.eigenvalues[-1])
    lines = [f"Hessian P.T P / m of the loss: eigenvalues {low:.3g} .. {high:.3g} "
             f"(they depend on the picture only)"]
    if lr * high < 2:
        lines.append(f"lr * max = {lr * high:.3g} < 2: stable; the slowest error component "
                     f"shrinks by x{abs(1 - lr * low):.4f} per iteration")
    else:
        lines.append(f"lr * max = {lr * high:.3g} >= 2: gradient descent diverges; use --lr "
                     f"below {2 / high:.3g}")
    return lines


def render(result: FitResult, console) -> None:
    """Print a :class:`FitResult`: stopping point, kernels side by side, the two checks."""
    from rich import box
    from rich.table import Table

    s = result.settings
    if result.converged:
        console.print(f"stopped at iteration [bold]{result.iterations}[/]: loss "
                      f"{result.final_loss:.4g} < {s['tol']:g} ({result.seconds:.2f} s)")
    elif result.diverged:
        console.print(f"[red]diverged[/] at iteration {result.iterations} (loss "
                      f"{result.final_loss:.3g}): lower --lr below "
                      f"{2 / result.eigenvalues[-1]:.3g}")
    else:
        console.print(f"[yellow]not converged[/] after {result.iterations} iterations: loss "
                      f"{result.final_loss:.4g} >= {s['tol']:g} ({result.seconds:.2f} s)")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("w_true", justify="right")
    table.add_column("w_result", justify="right")
    table.add_column("w_result - w_true", justify="right")
    for true_row, row in zip(result.w_true, result.w_result, strict=True):
        table.add_row("  ".join(f"{v:6.3g}" for v in true_row),
                      "  ".join(f"{v:10.6f}" for v in row),
                      "  ".join(f"{v:9.2e}" for v in row - true_row))
    console.print(table)

    def verdict(ok):
        return "[green]True[/]" if ok else "[red]False[/]"

    console.print(f"w allclose(atol={s['atol']:g}): {verdict(result.kernel_close)}   "
                  f"max |w_result - w_true| = "
                  f"{float(np.max(np.abs(result.w_result - result.w_true))):.2e}")
    console.print(f"y allclose(atol={s['atol']:g}): {verdict(result.output_close)}   "
                  f"max |x * w_result - y| = "
                  f"{float(np.max(np.abs(result.output - result.target))):.2e} "
                  f"(trained kernel; the book compared y with itself)")
