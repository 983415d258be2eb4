"""The book's pooling benchmark: 2x2 max pooling, stride 2, forward and backward.

As in the book: an input of shape (8, 3, 7, 6) (float32), 1000 iterations, each with a
fresh random input and a fresh random upstream gradient; one warm-up call first. Every
form of npconv (loops, im2col, Numba) and PyTorch compute y and dX on every iteration.
``--shape`` times other inputs, e.g. LeNet-5's first pooling layer (64, 6, 28, 28).

    python benchmarks/pooling.py
    python benchmarks/pooling.py --shape 64 6 28 28 --iterations 200

Not a test: nothing here gates CI on a wall-clock number.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import npconv.nn as nn


def time_npconv(form, inputs, grads):
    layer = nn.MaxPool2d(2, algorithm=form)
    layer.forward(inputs[0])
    layer.backward(grads[0])  # warm-up (and Numba's compilation, if not cached)
    started = time.perf_counter()
    for x, g in zip(inputs, grads, strict=True):
        layer.forward(x)
        layer.backward(g)
    return time.perf_counter() - started


def time_torch(inputs, grads, threads):
    import torch

    torch.set_num_threads(threads)
    pool = torch.nn.MaxPool2d(2)
    tensors = [(torch.tensor(x, requires_grad=True), torch.from_numpy(g))
               for x, g in zip(inputs, grads, strict=True)]
    y = pool(tensors[0][0])
    y.backward(tensors[0][1])
    started = time.perf_counter()
    for x, g in tensors:
        pool(x).backward(g)
    return time.perf_counter() - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=4, default=(8, 3, 7, 6), metavar=("N", "C", "H", "W"))
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import npconv

    npconv.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n, c, h, w = args.shape
    inputs = [rng.standard_normal(args.shape).astype(np.float32) for _ in range(args.iterations)]
    grads = [rng.standard_normal((n, c, h // 2, w // 2)).astype(np.float32)
             for _ in range(args.iterations)]
    print(f"max pooling 2x2 stride 2, input {tuple(args.shape)} float32, "
          f"{args.iterations} iterations of forward + backward (y and dX)")
    for form in (*nn.POOL_ALGORITHMS, "auto"):
        print(f"  npconv {form:7s} {time_npconv(form, inputs, grads):8.3f} s")
    try:
        print(f"  torch          {time_torch(inputs, grads, args.threads):8.3f} s")
    except ImportError:
        print("  torch          (not installed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
