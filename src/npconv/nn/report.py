"""What ``npconv train`` shows: the confusion matrix table and the training plot."""

from __future__ import annotations

import numpy as np
from rich.table import Table


def confusion_table(matrix: np.ndarray, classes) -> Table:
    """A rich table of a (K, K) confusion matrix: rows true classes, columns predicted."""
    k = len(classes)
    table = Table(title="confusion matrix on the test set (rows: true class, columns: "
                        "predicted)")
    table.add_column("true class")
    for j in range(k):
        table.add_column(str(j), justify="right")
    table.add_column("recall", justify="right")
    for i in range(k):
        total = int(matrix[i].sum())
        cells = [f"[bold]{matrix[i, j]}[/bold]" if i == j else str(matrix[i, j])
                 for j in range(k)]
        recall = f"{matrix[i, i] / total:.1%}" if total else "-"
        table.add_row(f"{i} {classes[i]}", *cells, recall)
    return table


def kernel_mosaic(weight: np.ndarray, pad: int = 1) -> np.ndarray:
    """First-layer kernels (C_out, C_in, KH, KW) tiled into one image.

    Each kernel is scaled to [0, 1] on its own. Returns an array of shape (H, W, 3) for
    three input channels (shown as colours) and (H, W) otherwise (the channel mean).
    """
    c_out, c_in, kh, kw = weight.shape
    w = weight.astype(np.float64)
    if c_in != 3:
        w = w.mean(axis=1, keepdims=True)  # (C_out, 1, KH, KW)
    low = w.min(axis=(1, 2, 3), keepdims=True)
    span = np.maximum(w.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
    w = (w - low) / span
    cols = int(np.ceil(np.sqrt(c_out)))
    rows = int(np.ceil(c_out / cols))
    mosaic = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad, w.shape[1]),
                     dtype=np.float64)
    for i in range(c_out):
        r, c = divmod(i, cols)
        top, left = pad + r * (kh + pad), pad + c * (kw + pad)
        mosaic[top:top + kh, left:left + kw] = w[i].transpose(1, 2, 0)  # (KH, KW, C)
    return mosaic if w.shape[1] == 3 else mosaic[..., 0]


def save_training_plot(path, history: dict, first_weight: np.ndarray, title: str = "") -> None:
    """Loss and accuracy curves and the first layer's kernels, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(history["step_loss"], dtype=np.float64)
    epochs = history["epochs"]
    fig, (ax_loss, ax_acc, ax_kernels) = plt.subplots(1, 3, figsize=(15, 4.5))
    if losses.size:
        steps = np.arange(1, losses.size + 1)
        ax_loss.plot(steps, losses, color="0.75", linewidth=0.6, label="per step")
        window = max(1, min(100, losses.size // 10))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1:], smooth, color="C0", label=f"mean of {window}")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_loss.legend()
    if epochs:
        x = [e["epoch"] for e in epochs]
        ax_acc.plot(x, [100 * e["train_acc"] for e in epochs], "o-", label="train")
        ax_acc.plot(x, [100 * e["test_acc"] for e in epochs], "s-", label="test")
        ax_acc.legend()
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_acc.grid(alpha=0.3)
    mosaic = kernel_mosaic(first_weight)
    ax_kernels.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None,
                      interpolation="nearest")
    ax_kernels.set_title(f"first layer's kernels {tuple(first_weight.shape)}")
    ax_kernels.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
