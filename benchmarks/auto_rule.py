"""How close ``algorithm="auto"``'s cheap rule comes to the fastest algorithm, layer by layer.

For each layer of a fixed, seeded sample of realistic convolution layers (ResNet-,
VGG-, MobileNet- and DeepLab-like: 1x1 to 7x7 kernels, strides 1-2, dilations 1-4,
groups, 3 to 512 channels, 7x7 to 112x112 inputs), times every algorithm that can run
it (``npconv.ALGORITHMS`` except the naive loops, plus ``winograd`` where it applies,
and the rule's pair where it splits a backward pass between two algorithms) on the
forward pass and on the backward pass (dX and dW), and compares the rule's choice with
the fastest. The candidates take turns round by round; each figure is the
median of the rounds, each round the median of a few calls after a warm-up call.

Prints one line per layer and pass: the rule's choice, the fastest algorithm, and the
rule's time over the fastest time ("regret", 1.00 when the rule picked the fastest).
At the end: how often the rule picked the fastest, and the geometric mean and the
worst of the regrets. This is what ``npconv.set_autotune`` would gain over the rule.

    python benchmarks/auto_rule.py                 # 24 layers, 2 threads, float32
    python benchmarks/auto_rule.py --layers 8 --json rule.json

Not a test: nothing here gates CI on a wall-clock number.
"""

from __future__ import annotations

import argparse
import math
import statistics

# npconv first: it sets up the thread pools' environment (GOMP_SPINCOUNT,
# OPENBLAS_THREAD_TIMEOUT) before NumPy loads OpenBLAS, as the npconv command does
import npconv

# isort: split
import numpy as np

from npconv import functional as F
from npconv import tuning
from npconv.algorithms import winograd
from npconv.bench import _median_time
from npconv.fileio import json_text, write_text
from npconv.spec import plan_conv2d

# (C_in, C_out, H, kernel, stride, dilation, groups) families; the sample draws from them
FAMILIES = [
    (3, 64, 112, 7, 2, 1, 1),  # stems
    (3, 32, 64, 3, 1, 1, 1),
    (64, 64, 56, 3, 1, 1, 1),  # ResNet stages
    (128, 128, 28, 3, 1, 1, 1),
    (256, 256, 14, 3, 1, 1, 1),
    (512, 512, 7, 3, 1, 1, 1),
    (64, 128, 56, 3, 2, 1, 1),  # downsampling
    (128, 256, 28, 3, 2, 1, 1),
    (256, 64, 28, 1, 1, 1, 1),  # bottlenecks
    (64, 256, 28, 1, 1, 1, 1),
    (256, 512, 28, 1, 2, 1, 1),
    (32, 32, 56, 3, 1, 1, 32),  # MobileNet depthwise
    (128, 128, 28, 3, 2, 1, 128),
    (64, 64, 32, 3, 1, 1, 4),  # grouped (ResNeXt)
    (256, 256, 32, 3, 1, 2, 1),  # DeepLab atrous
    (128, 128, 32, 3, 1, 4, 1),
    (32, 32, 32, 3, 1, 2, 1),
    (16, 32, 32, 5, 1, 1, 1),  # 5x5
    (64, 64, 28, 5, 1, 1, 1),
    (96, 96, 14, 3, 1, 1, 1),
    (192, 64, 28, 5, 1, 1, 1),
    (6, 16, 14, 5, 1, 1, 1),  # LeNet
    (64, 64, 14, 3, 1, 1, 1),
    (128, 128, 10, 3, 1, 1, 1),
]


def sample(count: int, seed: int = 0) -> list[tuple]:
    """``count`` layers (x shape, weight shape, keyword arguments): the families in
    order, each with a batch drawn so that the layer's forward pass is 0.1-1.5 GFLOP."""
    rng = np.random.default_rng(seed)
    layers = []
    for c_in, c_out, h, k, s, d, g in (FAMILIES * (1 + count // len(FAMILIES)))[:count]:
        pad = d * (k - 1) // 2
        oh = (h + 2 * pad - d * (k - 1) - 1) // s + 1
        flops = 2 * c_out * oh * oh * c_in // g * k * k
        n = int(np.clip(round(rng.uniform(1e8, 1.5e9) / flops), 1, 64))
        layers.append(((n, c_in, h, h), (c_out, c_in // g, k, k),
                       dict(stride=s, padding=pad, dilation=d, groups=g)))
    return layers


def audit(layer, dtype, rounds: int, calls: int) -> list[dict]:
    x_shape, w_shape, kwargs = layer
    spec = plan_conv2d(x_shape, w_shape, **kwargs).spec
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal(w_shape) / math.sqrt(np.prod(w_shape[1:]))).astype(dtype)
    g = rng.standard_normal(spec.y_shape).astype(dtype)
    candidates = [a for a in ("transpose", "im2col", "jit", "winograd")
                  if a != "winograd" or winograd.unsupported(spec) is None]
    passes = {
        "forward": lambda a: F.conv2d(x, w, algorithm=a, **kwargs),
        "backward": lambda a: F.conv2d_backward(x, w, g, algorithm=a,
                                                output_mask=(True, True, False), **kwargs),
    }
    rows = []
    for op, run in passes.items():
        rule = tuning.choose(spec, dtype, op)
        # a backward pass the rule splits between two algorithms ("im2col+jit") is a
        # candidate too, run through "auto" (no algorithm= names a pair)
        names = candidates + ([rule] if rule not in candidates else [])
        times: dict[str, list[float]] = {a: [] for a in names}
        for _ in range(rounds):
            for a in names:
                # one untimed call first (and compilation, on the first round)
                call = "auto" if a not in candidates else a
                times[a].append(_median_time(lambda a=call, run=run: run(a), calls))
        medians = {a: statistics.median(t) for a, t in times.items()}
        best = min(medians, key=medians.get)
        rows.append(dict(x=x_shape, weight=w_shape, kwargs=kwargs, op=op, rule=rule, best=best,
                         ms={a: 1e3 * t for a, t in medians.items()},
                         regret=medians[rule] / medians[best]))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=len(FAMILIES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    npconv.set_num_threads(args.threads)
    if tuning.autotune_enabled():
        parser.error("autotuning is on (NPCONV_AUTOTUNE): this audits the cheap rule")
    rows = []
    for layer in sample(args.layers, args.seed):
        for row in audit(layer, np.dtype(args.dtype), args.rounds, args.calls):
            rows.append(row)
            kw = ", ".join(f"{k}={v}" for k, v in row["kwargs"].items() if v not in (0, 1))
            times = "  ".join(f"{a} {t:.1f}" for a, t in row["ms"].items())
            print(f"x{row['x']} w{row['weight']} {kw} {row['op']}: rule {row['rule']}, "
                  f"fastest {row['best']}, regret {row['regret']:.2f}  ({times} ms)",
                  flush=True)
    regrets = [r["regret"] for r in rows]
    hits = sum(r["rule"] == r["best"] for r in rows)
    geo = math.exp(statistics.fmean(math.log(r) for r in regrets))
    print(f"\nthe rule picked the fastest in {hits} of {len(rows)} passes; regret "
          f"geometric mean {geo:.3f}, worst {max(regrets):.2f}")
    if args.json:  # written atomically
        write_text(args.json, json_text(dict(threads=args.threads, dtype=args.dtype,
                                             rows=rows, hits=hits, geomean_regret=geo)))


if __name__ == "__main__":
    main()
