"""``npconv bench``: the book's 14.5.3 comparison and a layer suite, against PyTorch.

Every timing is forward + dX + dW + dB, on every side (PyTorch's input requires grad,
so its autograd computes dX too). Figures are medians after warm-up; speed-ups are
ratios measured in the same run, npconv and PyTorch taking turns round by round.
PyTorch runs in a child process (:mod:`npconv._torch_side`) with its own threading
defaults: in one process the two share the OpenMP runtime and slow each other down.
Targets live here, never in the tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from . import tuning
from .algorithms import ALGORITHMS
from .book._options import positive_int
from .fileio import save_figure, write_text
from .functional import conv2d, conv2d_backward
from .spec import plan_conv2d


@dataclass(frozen=True)
class Layer:
    id: str
    x: tuple
    c_out: int
    kernel: tuple
    stride: int = 1
    padding: int | tuple = 0
    dilation: int = 1
    groups: int = 1

    @property
    def weight(self) -> tuple:
        return (self.c_out, self.x[1] // self.groups, *self.kernel)

    @property
    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)


SUITE = (
    Layer("book", (8, 3, 7, 6), 2, (4, 5)),
    Layer("lenet1", (64, 1, 28, 28), 6, (5, 5), padding=2),
    Layer("lenet2", (64, 6, 14, 14), 16, (5, 5)),
    Layer("cifar", (64, 3, 32, 32), 32, (3, 3), padding=1),
    Layer("res56", (16, 64, 56, 56), 64, (3, 3), padding=1),
    Layer("res28", (16, 128, 28, 28), 128, (3, 3), padding=1),
    Layer("down", (16, 64, 56, 56), 128, (3, 3), stride=2, padding=1),
    Layer("pointwise", (16, 256, 14, 14), 64, (1, 1)),
    Layer("depthwise", (16, 64, 56, 56), 64, (3, 3), padding=1, groups=64),
    Layer("dilated", (16, 32, 32, 32), 32, (3, 3), padding=2, dilation=2),
)
# Layers of other networks, beyond the suite (``--layers more``): where npconv stands on
# shapes the suite does not have (strided stems, ResNet's deep stages, MobileNet's
# strided depthwise layers, ResNeXt's grouped ones, Inception's 1x7 and 7x1, DeepLab's
# dilation 4, a single sample).
MORE = (
    Layer("stem7", (8, 3, 112, 112), 64, (7, 7), stride=2, padding=3),
    Layer("stem3", (16, 3, 112, 112), 8, (3, 3), stride=2, padding=1),
    Layer("vgg", (8, 64, 64, 64), 64, (3, 3), padding=1),
    Layer("res14", (16, 256, 14, 14), 256, (3, 3), padding=1),
    Layer("res7", (16, 512, 7, 7), 512, (3, 3), padding=1),
    Layer("proj", (16, 256, 28, 28), 512, (1, 1), stride=2),
    Layer("expand", (32, 64, 56, 56), 256, (1, 1)),
    Layer("dw_s2", (16, 96, 56, 56), 96, (3, 3), stride=2, padding=1, groups=96),
    Layer("dw5", (16, 64, 28, 28), 64, (5, 5), padding=2, groups=64),
    Layer("dw5_s2", (16, 72, 56, 56), 72, (5, 5), stride=2, padding=2, groups=72),
    Layer("grouped", (16, 128, 28, 28), 128, (3, 3), padding=1, groups=32),
    Layer("grouped_s2", (16, 128, 56, 56), 128, (3, 3), stride=2, padding=1, groups=32),
    Layer("incep1x7", (16, 128, 17, 17), 128, (1, 7), padding=(0, 3)),
    Layer("incep7x1", (16, 128, 17, 17), 128, (7, 1), padding=(3, 0)),
    Layer("c5s2", (32, 32, 28, 28), 64, (5, 5), stride=2, padding=2),
    Layer("dil4", (8, 64, 32, 32), 64, (3, 3), padding=4, dilation=4),
    Layer("single", (1, 128, 56, 56), 128, (3, 3), padding=1),
)
LAYER_SETS = {"suite": SUITE, "more": MORE, "all": SUITE + MORE}
GEMM_BOUND = ("res56", "res28", "down", "pointwise")


def select_layers(names: str | None) -> tuple:
    """The layers ``--layers`` names: comma-separated ids of :data:`SUITE` and
    :data:`MORE`, or a set name of :data:`LAYER_SETS` (``None``: the suite)."""
    if not names:
        return SUITE
    by_id = {layer.id: layer for layer in SUITE + MORE}
    chosen = []
    for name in names.split(","):
        if name in LAYER_SETS:
            chosen += LAYER_SETS[name]
        elif name in by_id:
            chosen.append(by_id[name])
        else:
            raise ValueError(f"no layer of the suite matches {name!r}; layers: "
                             f"{', '.join(by_id)}, or the sets {', '.join(LAYER_SETS)}")
    return tuple(dict.fromkeys(chosen))  # in order, each once
BOOK_FIGURES = {"torch": 0.457, "naive": 20.58, "im2col": 0.200}  # seconds, 14.5.3


def _timed(fn):
    """``fn`` as a function returning the seconds one call took."""
    def once():
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return once


def _median_time(fn, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    once = _timed(fn)
    return statistics.median(once() for _ in range(repeat))


# Idle thread pools keep spinning for a while after a call (OpenBLAS's for up to 2**28
# cycles, about 0.1 s; OpenMP's by default), stealing the cores from whatever runs
# next, here the other side; and a pool that has gone to sleep pays to wake up. So each
# side, in turn, waits this long, then warms up with untimed calls for at least
# WARM_SECONDS (its threads awake, its caches filled), then makes the timed call: both
# are timed hot, neither under the other's spinning threads. One untimed call was not
# enough: npconv's OpenMP threads go to sleep soon after they are idle (after a short
# spin, by npconv's choice, see npconv/__init__.py), and after the pause this virtual
# machine took some 50 ms of work to run them at full speed again (the dilated layer's
# step, measured when they slept at once: 20 ms after one call, 12.5-13 ms after five or
# in a loop; PyTorch's, whose threads spin longer, 16-18 ms either way). On a later
# machine (a Xeon with AVX-512) 50 ms was not enough either: npconv's step after the
# pause reached its speed in a loop only after some 0.3 s of calls (the pointwise
# layer 3.1-3.2 ms after 50 ms of warm-up, 1.95-2.1 after 0.3 s, in two alternating
# runs; PyTorch's 3.2-3.6 either way).
SETTLE_SECONDS = 0.12
WARM_SECONDS = 0.3


def _warm_up(fn) -> None:
    """Call ``fn`` (untimed) until at least :data:`WARM_SECONDS` have passed."""
    end = time.perf_counter() + WARM_SECONDS
    fn()
    while time.perf_counter() < end:
        fn()


def _interleaved_medians(fns, repeat: int) -> list[float]:
    """Median seconds of each function (each returns the seconds it measured), called in
    turn round by round, so a slow spell on a shared machine hits every side alike."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, bucket in zip(fns, times, strict=True):
            time.sleep(SETTLE_SECONDS)
            _warm_up(fn)  # wakes this side's thread pools
            bucket.append(fn())
    return [statistics.median(bucket) for bucket in times]


def sgemm_peak(dtype=np.float32, size: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of one large BLAS matrix product on this machine, now."""
    product, flops = _sgemm(dtype, size)
    t = _median_time(product, repeat)
    return flops / t / 1e9


def _sgemm(dtype=np.float32, size: int = 2048):
    """(``product``, its FLOPs): ``product()`` multiplies two ``size`` x ``size``
    matrices with BLAS."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    return lambda: a @ b, 2 * size**3


class TorchSide:
    """PyTorch in a child process (:mod:`npconv._torch_side`), or None-like when absent.

    Use :meth:`start`, which returns None when torch is not installed.
    """

    def __init__(self, threads: int):
        from . import _undo_thread_defaults

        env = dict(os.environ)
        _undo_thread_defaults(env)  # PyTorch keeps its own defaults
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_side.py")
        self._proc = subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=env)
        self._dir = tempfile.TemporaryDirectory(prefix="npconv-bench-")
        try:
            self.backend = self._ask(op="hello", threads=threads)["backend"]
        except RuntimeError as err:
            self._dir.cleanup()
            raise ImportError(f"PyTorch is installed but did not start: {err}") from err

    @classmethod
    def start(cls, threads: int):
        if importlib.util.find_spec("torch") is None:
            return None
        return cls(threads)

    def _ask(self, **msg) -> dict:
        try:
            self._proc.stdin.write(json.dumps(msg) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"the PyTorch benchmark process stopped (exit code "
                               f"{self._proc.wait()}) during {msg['op']!r}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the PyTorch benchmark process: {reply['error']}")
        return reply

    def layer(self, x, w, b, g, kwargs) -> tuple:
        """Load one layer's arrays; returns PyTorch's (y, dX, dW, dB) for them."""
        arrays = os.path.join(self._dir.name, "in.npz")
        out = os.path.join(self._dir.name, "out.npz")
        np.savez(arrays, x=x, w=w, b=b, g=g)
        self._ask(op="layer", arrays=arrays, kwargs=kwargs, out=out)
        with np.load(out) as f:
            return f["y"], f["dx"], f["dw"], f["db"]

    def step(self, part: str = "step", calls: int = 1) -> float:
        """Seconds of one forward + backward of the loaded layer, or of one of
        :data:`PASSES` alone (timed in the child; the median of ``calls`` in a row)."""
        return self._ask(op="time", part=part, calls=calls)["seconds"]

    def book(self, x_shape, w_shape, y_shape, dtype, iterations: int) -> float:
        return self._ask(op="book", x=list(x_shape), w=list(w_shape), y=list(y_shape),
                         dtype=np.dtype(dtype).name, iterations=iterations,
                         warm_seconds=WARM_SECONDS)["seconds"]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._ask_quit()
        self._dir.cleanup()

    def _ask_quit(self) -> None:
        try:
            self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        self._proc.wait(timeout=30)


def torch_backend(torch_side) -> str:
    return "not installed" if torch_side is None else torch_side.backend


def _npconv_step(x, w, b, g, kwargs, algorithm):
    y = conv2d(x, w, b, algorithm=algorithm, **kwargs)
    return (y, *conv2d_backward(x, w, g, algorithm=algorithm, **kwargs))


def _layer_arrays(layer: Layer, dtype):
    """x, W, b, dZ of a suite layer (seeded: every run times the same arrays), and its spec."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x, dtype=dtype)
    w = (rng.standard_normal(layer.weight) / np.sqrt(np.prod(layer.weight[1:]))).astype(dtype)
    b = rng.standard_normal(layer.c_out).astype(dtype)
    spec = plan_conv2d(x.shape, w.shape, **layer.kwargs).spec
    g = rng.standard_normal(spec.y_shape).astype(dtype)
    return x, w, b, g, spec


def _time_layer(layer: Layer, torch, dtype, repeat: int, algorithm: str, sgemm) -> dict:
    """One row of the suite: npconv and PyTorch on the same arrays, and the sgemm peak
    (``sgemm``: :func:`_sgemm`'s product and FLOPs) taking turns with them, so that the
    row's % of the peak compares rates measured in the same moments. Measured once
    before the whole suite, the peak read 308-412 GFLOP/s from run to run on a shared
    2-core Xeon, and a row's % of it moved as much."""
    x, w, b, g, spec = _layer_arrays(layer, dtype)
    t0 = time.perf_counter()
    ours = _npconv_step(x, w, b, g, layer.kwargs, algorithm)  # also warms up / compiles
    first_call = time.perf_counter() - t0
    product, product_flops = sgemm
    steps = [_timed(lambda: _npconv_step(x, w, b, g, layer.kwargs, algorithm)),
             _timed(product)]
    if torch is not None:
        ref = torch.layer(x, w, b, g, layer.kwargs)
        steps.append(torch.step)
    t_np, t_product, *t_torch = _interleaved_medians(steps, repeat)
    peak = product_flops / t_product / 1e9
    if algorithm == "auto":
        fwd, bwd = (tuning.choose(spec, x.dtype, op) for op in ("forward", "backward"))
        algorithm = fwd if fwd == bwd else f"{fwd}/{bwd}"
    row = dict(id=layer.id, x=layer.x, weight=layer.weight, **layer.kwargs,
               algorithm=algorithm, ms=t_np * 1e3, first_call_ms=first_call * 1e3,
               gflops=3 * spec.flops / t_np / 1e9, sgemm_gflops=peak)
    row["peak_pct"] = 100 * row["gflops"] / peak
    if torch is not None:
        row.update(torch_ms=t_torch[0] * 1e3, speedup=t_torch[0] / t_np,
                   max_abs_err=max(float(np.max(np.abs(a - r)))
                                   for a, r in zip(ours, ref, strict=True)))
    return row


@contextmanager
def _settings(autotune: bool, precision: str | None):
    """Autotuning on inside the block when ``autotune`` (and back off after it, unless it
    was on already), and float32 precision ``precision`` (None: as set; the previous
    level after it)."""
    switch = autotune and not tuning.autotune_enabled()
    before = tuning.get_float32_precision()
    tuning.set_float32_precision(precision or before)
    if switch:
        tuning.set_autotune(True)
    try:
        yield
    finally:
        if switch:
            tuning.set_autotune(False)
        tuning.set_float32_precision(before)


def run_suite(threads: int = 2, dtype=np.float32, repeat: int = 5, layers=SUITE,
              algorithm: str = "auto", progress=None, autotune: bool = False,
              precision: str | None = None) -> dict:
    """Time each layer of :data:`SUITE` in npconv and PyTorch; returns a JSON-able dict.

    With ``autotune`` the ``auto`` choice is measured (:func:`npconv.set_autotune`);
    ``precision`` is :func:`npconv.set_float32_precision`'s level while it runs (None:
    the level set).
    """
    tuning.set_num_threads(threads)
    torch = TorchSide.start(threads)
    sgemm = _sgemm(dtype)
    rows = []
    try:
        with _settings(autotune, precision):
            for layer in layers:
                rows.append(_time_layer(layer, torch, dtype, repeat, algorithm, sgemm))
                if progress:
                    progress(layer.id)
    finally:
        if torch is not None:
            torch.close()
    result = dict(kind="suite", machine=machine(), threads=threads, dtype=np.dtype(dtype).name,
                  repeat=repeat, autotune=autotune,
                  float32_precision=precision or tuning.get_float32_precision(),
                  # the median of the rows' peaks, each measured with its layer
                  sgemm_peak_gflops=(statistics.median(r["sgemm_gflops"] for r in rows)
                                     if rows else sgemm_peak(dtype)),
                  torch=torch_backend(torch), rows=rows,
                  peak_rss_mib=peak_rss_mib())
    speedups = [r["speedup"] for r in rows if "speedup" in r]
    if speedups:
        result["geomean_speedup"] = float(np.exp(np.mean(np.log(speedups))))
    return result


# The passes of one step, each timed alone by ``npconv bench passes``; the backward ones
# as conv2d_backward with only that gradient asked for (its output_mask).
PASSES = ("forward", "grad_input", "grad_weight", "grad_bias")
_MASKS = {"grad_input": (True, False, False), "grad_weight": (False, True, False),
          "grad_bias": (False, False, True)}
# Each round of ``bench passes`` times this many calls in a row on each side and keeps
# their median: a pass is a third of a step or less, short enough for one slow call
# (a late thread wake-up) to decide a single timing.
PASS_CALLS = 5


def _npconv_pass(x, w, b, g, kwargs, part: str):
    if part == "forward":
        return conv2d(x, w, b, **kwargs)
    return conv2d_backward(x, w, g, output_mask=_MASKS[part], **kwargs)


def _time_passes(layer: Layer, torch, dtype, repeat: int) -> list[dict]:
    """One row per pass of ``layer``: npconv's ``auto`` and PyTorch, each pass alone
    (each round: the median of :data:`PASS_CALLS` calls in a row, after the warm-up)."""
    x, w, b, g, spec = _layer_arrays(layer, dtype)
    if torch is not None:
        torch.layer(x, w, b, g, layer.kwargs)
    rows = []
    for part in PASSES:
        def ours(part=part):
            times = []
            for _ in range(PASS_CALLS):
                t0 = time.perf_counter()
                _npconv_pass(x, w, b, g, layer.kwargs, part)
                times.append(time.perf_counter() - t0)
            return statistics.median(times)

        steps = [ours]
        if torch is not None:
            steps.append(lambda part=part: torch.step(part, PASS_CALLS))
        t_np, *t_torch = _interleaved_medians(steps, repeat)
        # dB is one addition per element of dZ; the others a direct convolution's FLOPs
        flops = spec.flops if part != "grad_bias" else spec.n * spec.c_out * spec.oh * spec.ow
        op = "forward" if part == "forward" else "backward"
        row = dict(id=layer.id, part=part, algorithm=tuning.choose(spec, x.dtype, op),
                   ms=t_np * 1e3, gflops=flops / t_np / 1e9)
        if torch is not None:
            row.update(torch_ms=t_torch[0] * 1e3, torch_gflops=flops / t_torch[0] / 1e9,
                       speedup=t_torch[0] / t_np)
        rows.append(row)
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = r["ms"] / total
    return rows


def run_passes(threads: int = 2, dtype=np.float32, repeat: int = 5, layers=SUITE,
               progress=None, autotune: bool = False, precision: str | None = None) -> dict:
    """Where a step's time goes: each pass of each suite layer timed alone, npconv's
    ``auto`` against PyTorch (``convolution_backward`` with one gradient asked for).
    With ``autotune`` the ``auto`` choice is measured (:func:`npconv.set_autotune`);
    ``precision`` is :func:`npconv.set_float32_precision`'s level while it runs (None:
    the level set)."""
    tuning.set_num_threads(threads)
    torch = TorchSide.start(threads)
    rows = []
    try:
        with _settings(autotune, precision):
            for layer in layers:
                rows.extend(_time_passes(layer, torch, dtype, repeat))
                if progress:
                    progress(layer.id)
    finally:
        if torch is not None:
            torch.close()
    return dict(kind="passes", machine=machine(), threads=threads, dtype=np.dtype(dtype).name,
                repeat=repeat, autotune=autotune,
                float32_precision=precision or tuning.get_float32_precision(),
                torch=torch_backend(torch), rows=rows)


def run_book(iterations: int = 1000, threads: int = 2, dtype=np.float32,
             methods=("torch", *ALGORITHMS, "auto"), progress=None, rounds: int = 5) -> dict:
    """The 14.5.3 benchmark: ``iterations`` x (fresh x, forward, fresh dZ, backward).

    Each method's loop runs ``rounds`` times, the methods taking turns round by round
    (each after :data:`SETTLE_SECONDS`, so no method runs under the previous one's
    spinning threads), and the median loop counts: on a shared machine one slow spell
    then moves no figure. ``naive`` runs a tenth of the iterations, scaled up.
    """
    tuning.set_num_threads(threads)
    torch = TorchSide.start(threads) if "torch" in methods else None
    layer = SUITE[0]
    rng = np.random.default_rng(0)
    w = rng.standard_normal(layer.weight).astype(dtype)
    b = np.zeros(layer.c_out, dtype=dtype)
    y_shape = plan_conv2d(layer.x, layer.weight).spec.y_shape

    def loop(method: str) -> float:
        """Seconds of ``iterations`` steps of ``method`` (after one warm-up step)."""
        if method == "torch":
            return torch.book(layer.x, layer.weight, y_shape, dtype, iterations)

        def one():
            x = rng.standard_normal(layer.x, dtype=dtype)
            g = rng.standard_normal(y_shape, dtype=dtype)
            _npconv_step(x, w, b, g, {}, method)

        _warm_up(one)  # compiles the Numba kernels on the first round
        n = iterations if method != "naive" else max(1, iterations // 10)
        t0 = time.perf_counter()
        for _ in range(n):
            one()
        return (time.perf_counter() - t0) * iterations / n

    timed = [m for m in methods if m != "torch" or torch is not None]
    runs: dict[str, list[float]] = {m: [] for m in timed}
    try:
        for r in range(rounds):
            for method in timed:
                time.sleep(SETTLE_SECONDS)  # the previous method's idle threads stop spinning
                runs[method].append(loop(method))
                if progress:
                    progress(f"{method} (run {r + 1} of {rounds})")
    finally:
        if torch is not None:
            torch.close()
    totals = {m: statistics.median(t) for m, t in runs.items()}
    result = dict(kind="book", machine=machine(), threads=threads, dtype=np.dtype(dtype).name,
                  iterations=iterations, rounds=rounds, torch=torch_backend(torch),
                  seconds=totals, book_seconds=BOOK_FIGURES)
    if "torch" in totals:
        result["speedup_vs_torch"] = {m: totals["torch"] / t for m, t in totals.items()}
    return result


def run_memory(threads: int = 2, dtype=np.float32, x_shape=(80, 256, 56, 56), c_out=64,
               kernel=(3, 3)) -> dict:
    """Forward + backward of a layer whose full im2col matrix exceeds 2 GiB, with peak RSS.

    Run it in a fresh process (``npconv bench memory``): peak RSS is per process.
    """
    tuning.set_num_threads(threads)
    dtype = np.dtype(dtype)
    w_shape = (c_out, x_shape[1], *kernel)
    spec = plan_conv2d(x_shape, w_shape, padding=kernel[0] // 2).spec
    cols_bytes = spec.c_in * spec.kh * spec.kw * spec.n * spec.oh * spec.ow * dtype.itemsize
    # warm up first: compiled kernels and BLAS buffers are not part of the workspace
    small = np.ones((2, 4, 8, 8), dtype=dtype), np.ones((4, 4, 3, 3), dtype=dtype)
    conv2d_backward(*small, conv2d(*small, algorithm="im2col"), algorithm="im2col")
    sgemm_peak(dtype, size=512, repeat=1)
    rss_before = peak_rss_mib()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape, dtype=np.float32).astype(dtype, copy=False)
    w = rng.standard_normal(w_shape, dtype=np.float32).astype(dtype, copy=False)
    g = rng.standard_normal(spec.y_shape, dtype=np.float32).astype(dtype, copy=False)
    t0 = time.perf_counter()
    y = conv2d(x, w, padding=kernel[0] // 2, algorithm="im2col")
    dx, dw, db = conv2d_backward(x, w, g, padding=kernel[0] // 2, algorithm="im2col")
    seconds = time.perf_counter() - t0
    arrays = sum(a.nbytes for a in (x, w, g, y, dx, dw, db)) / 2**20
    grown = peak_rss_mib() - rss_before
    limit = tuning.workspace_limit() / 2**20
    # every buffer of a chunk (column matrix, GEMM output or dZ', padded input) counts
    # against the limit
    budget = arrays + limit
    return dict(kind="memory", machine=machine(), x=x_shape, weight=w_shape,
                full_im2col_mib=cols_bytes / 2**20, workspace_limit_mib=limit,
                arrays_mib=arrays, peak_rss_growth_mib=grown, budget_mib=budget,
                within_budget=grown <= budget, seconds=seconds)


def print_memory(result: dict, console) -> None:
    console.print(
        f"x {result['x']} * W {result['weight']}: the full im2col matrix would take "
        f"{result['full_im2col_mib']:,.0f} MiB; workspace limit "
        f"{result['workspace_limit_mib']:,.0f} MiB; the arrays themselves "
        f"{result['arrays_mib']:,.0f} MiB")
    verdict = "within" if result["within_budget"] else "OVER"
    console.print(f"peak RSS grew by {result['peak_rss_growth_mib']:,.0f} MiB during forward + "
                  f"backward ({result['seconds']:.1f} s): {verdict} the budget of "
                  f"{result['budget_mib']:,.0f} MiB (arrays + workspace limit)")


def _cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the platform's machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The machine a benchmark ran on: CPU, cores, the vector width npconv's kernels were
    compiled for, Python and NumPy."""
    from ._numba import VECTOR_BYTES

    isa = "AVX-512" if VECTOR_BYTES >= 64 else "AVX2 or narrower"
    return (f"{_cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, kernels for "
            f"{isa}, Python {platform.python_version()}, NumPy {np.__version__}")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- output
def _table(title: str, cols, text_cols):
    """A rich table of ``cols``, numbers right-aligned, ``text_cols`` left."""
    from rich.table import Table

    table = Table(title=title)
    for c in cols:
        table.add_column(c, justify="left" if c in text_cols else "right")
    return table


def print_suite(result: dict, console) -> None:
    table = _table(f"forward + dX + dW + dB, {result['dtype']}, {result['threads']} threads, "
                   f"median of {result['repeat']}{_precision_note(result)}",
                   ["layer", "algorithm", "ms", "torch ms", "GFLOP/s", "vs torch",
                    "% sgemm peak", "max abs err", "first call ms"], ("layer", "algorithm"))
    for r in result["rows"]:
        table.add_row(r["id"], r["algorithm"], f"{r['ms']:.2f}",
                      f"{r['torch_ms']:.2f}" if "torch_ms" in r else "-",
                      f"{r['gflops']:.1f}", f"{r['speedup']:.2f}x" if "speedup" in r else "-",
                      f"{r['peak_pct']:.0f}%",
                      f"{r['max_abs_err']:.1e}" if "max_abs_err" in r else "-",
                      f"{r['first_call_ms']:.0f}")
    console.print(table)
    peaks = [r["sgemm_gflops"] for r in result["rows"] if "sgemm_gflops" in r]
    spread = f" ({min(peaks):.0f}-{max(peaks):.0f})" if len(peaks) > 1 else ""
    console.print(f"sgemm peak, measured taking turns with each layer: "
                  f"{result['sgemm_peak_gflops']:.1f} GFLOP/s{spread}; "
                  f"{result['torch']}; peak RSS {result['peak_rss_mib']:.0f} MiB")
    console.print(f"machine: {result['machine']}")
    if "geomean_speedup" in result:
        console.print(f"geometric mean speed-up vs torch: {result['geomean_speedup']:.2f}x")
    if any("winograd" in r["algorithm"].split("/") for r in result["rows"]):
        share = ("4/9 (F(2x2, 3x3)) or 1/4 (F(4x4, 3x3), on outputs of at least 24x24)"
                 if _f4(result) else "4/9")
        console.print("GFLOP/s counts a direct convolution's FLOPs for every row; winograd "
                      f"executes {share} of its multiply-adds, so the GFLOP/s and % of peak "
                      "of its rows are effective rates")


def _f4(result: dict) -> bool:
    """Whether the run's winograd rows may have used F(4x4, 3x3)."""
    return result["dtype"] == "float32" and result.get("float32_precision") == "high"


def _precision_note(result: dict) -> str:
    """``", float32 precision highest"`` in a title, for float32 runs."""
    level = result.get("float32_precision")
    return f", float32 precision {level}" if result["dtype"] == "float32" and level else ""


def print_passes(result: dict, console) -> None:
    table = _table(f"each pass alone, {result['dtype']}, {result['threads']} threads, "
                   f"median of {result['repeat']} rounds{_precision_note(result)}",
                   ["layer", "pass", "algorithm", "ms", "share of step", "GFLOP/s",
                    "torch ms", "torch GFLOP/s", "vs torch"], ("layer", "pass", "algorithm"))
    previous = None
    for r in result["rows"]:
        if previous is not None and r["id"] != previous:
            table.add_section()
        previous = r["id"]
        has_torch = "torch_ms" in r
        table.add_row(r["id"], r["part"], r["algorithm"], f"{r['ms']:.3f}",
                      f"{100 * r['share']:.0f}%", f"{r['gflops']:.1f}",
                      f"{r['torch_ms']:.3f}" if has_torch else "-",
                      f"{r['torch_gflops']:.1f}" if has_torch else "-",
                      f"{r['speedup']:.2f}x" if has_torch else "-")
    console.print(table)
    console.print(f"{result['torch']}; grad_bias GFLOP/s counts one addition per element "
                  f"of dZ; PyTorch's backward asked for dB alone still runs its weight-gradient "
                  f"primitive (autograd never asks for it alone)")
    console.print(f"machine: {result['machine']}")


def print_book(result: dict, console) -> None:
    console.print(f"--- {result['iterations']} x forward + backward (dX, dW, dB), "
                  f"X (8,3,7,6), W (2,3,4,5), {result['dtype']}, {result['threads']} threads, "
                  f"median of {result.get('rounds', 1)} runs ---")
    for method, seconds in result["seconds"].items():
        line = f"{method + ':':<11}{seconds:8.3f} s"
        if "speedup_vs_torch" in result and method != "torch":
            line += f"   {result['speedup_vs_torch'][method]:6.1f}x torch"
        if method in result["book_seconds"]:
            line += f"   (book: {result['book_seconds'][method]:.3f} s)"
        console.print(line)
    console.print(f"{result['torch']}; the book's torch run computed no dX, ours does")
    console.print(f"machine: {result['machine']}")


def save_plot(result: dict, path: str) -> None:
    """A bar chart of the suite: npconv and torch milliseconds per layer (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    ids = [r["id"] for r in rows]
    pos = np.arange(len(rows))
    many = len(rows) > 10  # longer lists (--layers all): slanted labels, a wider figure
    fig, ax = plt.subplots(figsize=(max(10.0, 0.62 * len(rows) + 2), 4.5 + 0.5 * many))
    ax.bar(pos - 0.2, [r["ms"] for r in rows], 0.4, label="npconv (auto)", color="tab:blue")
    top = max(r["ms"] for r in rows)
    if all("torch_ms" in r for r in rows):
        ax.bar(pos + 0.2, [r["torch_ms"] for r in rows], 0.4, label="PyTorch", color="tab:gray")
        top = max(top, *(r["torch_ms"] for r in rows))
        for p, r in zip(pos, rows, strict=True):
            ax.annotate(f"{r['speedup']:.2f}x", (p, max(r["ms"], r["torch_ms"])),
                        ha="center", va="bottom", fontsize=8)
    if many:
        ax.set_xticks(pos, ids, rotation=35, ha="right")
    else:
        ax.set_xticks(pos, ids)
    ax.set_yscale("log")
    ax.set_ylim(top=top * 4)  # room for the labels and the legend above the bars
    ax.set_ylabel("ms per forward + backward (log)")
    ax.set_title(f"npconv vs PyTorch, {result['dtype']}, {result['threads']} threads "
                 f"(labels: speed-up vs torch)")
    ax.legend(loc="upper left", ncols=2)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def save_passes_plot(result: dict, path: str) -> None:
    """A grid of layers x passes: each cell coloured by npconv's speed-up over PyTorch
    (log scale, blue faster, red slower) and labelled with it and npconv's ms; without
    PyTorch, coloured by the pass's share of the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    rows = result["rows"]
    ids = list(dict.fromkeys(r["id"] for r in rows))
    cell = {(r["id"], r["part"]): r for r in rows}
    versus = all("speedup" in r for r in rows)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(ids) + 1.6))
    if versus:
        grid = np.array([[np.log2(cell[i, p]["speedup"]) for p in PASSES] for i in ids])
        # up to 16x either way: dB's large ratios would wash out every other cell
        limit = min(4.0, max(1.0, float(np.ceil(np.abs(grid).max()))))
        image = ax.imshow(np.clip(grid, -limit, limit), cmap="RdBu",
                          norm=TwoSlopeNorm(0.0, -limit, limit), aspect="auto")
        dark = np.abs(grid) > 0.6 * limit
    else:
        grid = np.array([[cell[i, p]["share"] for p in PASSES] for i in ids])
        image = ax.imshow(grid, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        dark = grid > 0.6
    for y, i in enumerate(ids):
        for x, p in enumerate(PASSES):
            r = cell[i, p]
            label = (f"{r['speedup']:.2f}x\n" if versus else "") + f"{r['ms']:.2f} ms"
            ax.text(x, y, label, ha="center", va="center", fontsize=7.5,
                    color="white" if dark[y, x] else "black")
    ax.set_xticks(range(len(PASSES)), ["forward", "dX", "dW", "dB"])
    ax.set_yticks(range(len(ids)), ids)
    ax.xaxis.tick_top()
    bar = fig.colorbar(image, ax=ax, fraction=0.05)
    if versus:
        ticks = np.arange(-limit, limit + 1)
        bar.set_ticks(ticks, labels=[(f"{2 ** int(t)}x" if t >= 0 else f"1/{2 ** int(-t)}x")
                                     + ("+" if t == limit else "") for t in ticks])
        bar.set_label("speed-up vs PyTorch (log scale)")
        title = "npconv (auto) vs PyTorch per pass"
    else:
        bar.set_label("share of the step")
        title = "npconv (auto) per pass (PyTorch not installed)"
    ax.set_title(f"{title}, {result['dtype']}, {result['threads']} threads", fontsize=10,
                 pad=28)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI
def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=max(Console().width, 132))  # the suite table needs the room
    dtype = np.dtype(args.dtype)
    if args.which == "memory":
        result = run_memory(args.threads, dtype)
        print_memory(result, console)
    elif args.which == "book":
        result = run_book(args.iterations, args.threads, dtype, rounds=args.rounds,
                          progress=lambda m: console.print(f"  timed {m}", style="dim"))
        print_book(result, console)
    else:  # suite or passes: layers of the suite
        layers = select_layers(args.layers)
        progress = lambda i: console.print(f"  timed {i}", style="dim")  # noqa: E731
        if args.which == "passes":
            result = run_passes(args.threads, dtype, args.repeat, layers, progress=progress,
                                autotune=args.autotune, precision=args.precision)
            print_passes(result, console)
        else:
            result = run_suite(args.threads, dtype, args.repeat, layers, progress=progress,
                               autotune=args.autotune, precision=args.precision)
            print_suite(result, console)
        if args.plot:
            (save_passes_plot if args.which == "passes" else save_plot)(result, args.plot)
            console.print(f"plot written to {args.plot}")
    if args.json:
        write_text(args.json, json.dumps(result, indent=2, default=str))
        console.print(f"results written to {args.json}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time npconv against PyTorch (the book's benchmark or a layer suite)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  npconv bench book\n  npconv bench suite --plot suite.png\n"
               "  npconv bench suite --layers res56,down --threads 1 --json out.json\n"
               "  npconv bench passes --layers lenet2,down --plot passes.png\n"
               "  npconv bench suite --layers more\n"
               "  npconv bench memory")
    p.add_argument("which", choices=("book", "suite", "passes", "memory"),
                   help="book: the 14.5.3 comparison; suite: the layer suite; passes: each "
                        "pass of the suite's layers (forward, dX, dW, dB) timed alone, where "
                        "a step's time goes; memory: a layer whose full im2col matrix "
                        "exceeds 2 GiB, with peak RSS")
    p.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeat", type=positive_int, default=5,
                   help="timed repeats per layer (suite) or pass (passes)")
    p.add_argument("--iterations", type=positive_int, default=1000, help="iterations (book)")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="book: runs of each method's loop, taking turns; the median counts")
    p.add_argument("--layers", help="comma-separated layer ids (suite, passes): the suite's, "
                                    "those of other networks ('more': strided stems, deep "
                                    "stages, MobileNet, ResNeXt, Inception, DeepLab), or the "
                                    "sets 'suite', 'more', 'all'")
    p.add_argument("--autotune", action="store_true",
                   help="suite, passes: let auto measure its choice per layer "
                        "(set_autotune)")
    p.add_argument("--float32-precision", choices=tuning.PRECISIONS, dest="precision",
                   help="suite, passes: the rounding error float32 may trade for speed "
                        "(set_float32_precision; default: as set, 'high' unless "
                        "NPCONV_FLOAT32_PRECISION says otherwise; 'high' lets Winograd use "
                        "F(4x4, 3x3) on large 3x3 layers)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--plot", help="bar chart of the suite, or the passes' grid of speed-ups "
                                  "(PNG; needs matplotlib)")
    p.set_defaults(handler=handle, command="bench")

