"""The 17.3.7 figure: source, target, trained output, their difference, loss, kernels.

matplotlib is imported here only, when a figure is asked for (``npconv[plot]``).
"""

from __future__ import annotations

import numpy as np

from ..fileio import save_figure


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--out needs matplotlib: pip install 'npconv[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _picture(fig, ax, image, title, **kwargs):
    shown = ax.imshow(image, interpolation="nearest", **kwargs)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)


def _kernels(ax, w_true, w_result):
    """w_true and w_result side by side as one heat map with the values written in."""
    kh, kw = w_true.shape
    both = np.full((kh, 2 * kw + 1), np.nan)
    both[:, :kw], both[:, kw + 1:] = w_true, w_result
    limit = max(float(np.max(np.abs(w_true))), 1e-12)
    ax.imshow(both, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    if kh * kw <= 49:
        for (r, c), v in np.ndenumerate(both):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.3f}" if c > kw else f"{v:.3g}", ha="center",
                        va="center", fontsize=8 if kw <= 3 else 6,
                        color="white" if abs(v) > 0.6 * limit else "black")
    ax.set_xticks([(kw - 1) / 2, kw + 1 + (kw - 1) / 2], ["w_true", "w_result"])
    ax.set_yticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("kernels", fontsize=10)


def plot(result, path: str) -> None:
    """Save the figure of a :class:`~npconv.book.fit_kernel.FitResult` to ``path``.

    Panels: the source x; the target y = x * w_true and the trained output
    z = x * w_result on one colour scale; z - y on a symmetric scale; the loss per
    iteration (log scale) with the stopping threshold; w_true beside w_result.
    """
    plt = _matplotlib()
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.2))
    low = float(min(result.target.min(), result.output.min()))
    high = float(max(result.target.max(), result.output.max()))
    _picture(fig, axes[0, 0], result.source, f"source x {result.source.shape}", cmap="gray",
             vmin=0, vmax=1)
    _picture(fig, axes[0, 1], result.target, f"target y = x * w_true {result.target.shape}",
             cmap="gray", vmin=low, vmax=high)
    _picture(fig, axes[0, 2], result.output, "trained output z = x * w_result", cmap="gray",
             vmin=low, vmax=high)
    diff = result.output - result.target
    limit = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
    limit = limit if limit > 0 else 1e-12
    _picture(fig, axes[1, 0], diff, f"difference z - y (max |z - y| = {limit:.1e})",
             cmap="RdBu_r", vmin=-limit, vmax=limit)

    ax = axes[1, 1]
    ax.semilogy(np.arange(len(result.history)), result.history, color="tab:blue", lw=1.5)
    ax.axhline(result.settings["tol"], color="tab:red", ls="--", lw=1,
               label=f"stop: loss < {result.settings['tol']:g}")
    ax.plot([result.iterations], [result.final_loss], "o", color="tab:red",
            label=f"last: iteration {result.iterations}, loss {result.final_loss:.2e}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss = sum((z - y)^2) / 2m")
    ax.set_title("loss (log scale)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9, loc="upper right")
    _kernels(axes[1, 2], result.w_true, result.w_result)

    verdict = (f"stopped at iteration {result.iterations}" if result.converged else
               "diverged" if result.diverged else
               f"not converged in {result.iterations} iterations")
    s = result.settings
    fig.suptitle(
        f"17.3.7 kernel recovery: {result.kernel_name} on {s['image']}, lr {s['lr']}, "
        f"{verdict}; kernel allclose {result.kernel_close}, output allclose "
        f"{result.output_close} (atol {s['atol']:g})", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
