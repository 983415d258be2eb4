"""PyTorch's side of ``npconv bench``, run as a separate process.

PyTorch and npconv share the OpenMP runtime when they live in one process, and each
slows the other down (measured: npconv's im2col on small layers 50-80% slower with
torch loaded beside it; torch's threads spin for milliseconds by default, npconv asks
for a short spin, and the runtime reads that choice once). So the benchmark times PyTorch in
this child process, with PyTorch's own defaults, and talks to it over a pipe. This
file is run as a script and imports neither npconv nor anything that sets OpenMP up.

Protocol: one JSON object per line on stdin, one reply per line on stdout.

* ``{"op": "hello", "threads": n}`` -> ``{"backend": "torch 2.x (oneDNN CPU convolution)"}``
* ``{"op": "layer", "arrays": "in.npz", "kwargs": {...}, "out": "out.npz"}``: loads x,
  w, b, g, runs one step (the warm-up) and saves y, dX, dW, dB to ``out`` -> ``{}``
* ``{"op": "time", "part": p, "calls": k}``: one timed step (``p`` "step", the
  default), or one pass alone, as autograd runs it (``p`` "forward", "grad_input",
  "grad_weight" or "grad_bias"); with ``k`` > 1 (default 1) the median of k calls in a
  row -> ``{"seconds": s}``
* ``{"op": "book", "x": [...], "y": [...], "dtype": "float32", "iterations": k,
  "warm_seconds": t}``: the 14.5.3 loop (fresh random x and dZ each iteration), after
  at least t seconds of warm-up steps -> ``{"seconds": s}``
* ``{"op": "quit"}``
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _step(torch, x, w, b, g, kwargs):
    tx = torch.from_numpy(x).requires_grad_(True)
    tw = torch.from_numpy(w).requires_grad_(True)
    tb = torch.from_numpy(b).requires_grad_(True)
    y = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    y.backward(torch.from_numpy(g))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def _part(torch, part, x, w, b, g, kwargs):
    """One pass alone: the forward without autograd, or the call autograd makes for the
    backward (``convolution_backward``) with only this gradient asked for."""
    tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
    if part == "forward":
        with torch.no_grad():
            return torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    mask = [part == "grad_input", part == "grad_weight", part == "grad_bias"]
    return torch.ops.aten.convolution_backward(
        torch.from_numpy(g), tx, tw, [w.shape[0]], _pair(kwargs.get("stride", 1)),
        _pair(kwargs.get("padding", 0)), _pair(kwargs.get("dilation", 1)), False, [0, 0],
        int(kwargs.get("groups", 1)), mask)


def _book(torch, msg) -> float:
    """Seconds of the 14.5.3 loop: fresh random x and dZ, forward, backward."""
    dtype = np.dtype(msg["dtype"])
    rng = np.random.default_rng(1)
    w = rng.standard_normal(msg["w"]).astype(dtype)
    b = np.zeros(msg["w"][0], dtype=dtype)

    def one():
        x = rng.standard_normal(msg["x"], dtype=dtype)
        g = rng.standard_normal(msg["y"], dtype=dtype)
        _step(torch, x, w, b, g, {})

    end = time.perf_counter() + float(msg.get("warm_seconds", 0))
    one()  # warm-up: at least warm_seconds of steps, as npconv's side gets
    while time.perf_counter() < end:
        one()
    t0 = time.perf_counter()
    for _ in range(int(msg["iterations"])):
        one()
    return time.perf_counter() - t0


def main() -> None:
    import torch

    torch.set_flush_denormal(True)
    state = {}
    for line in sys.stdin:
        msg = json.loads(line)
        op, reply = msg["op"], {}
        if op == "quit":
            break
        if op == "hello":
            torch.set_num_threads(int(msg["threads"]))
            onednn = torch.backends.mkldnn.is_available()
            reply["backend"] = (f"torch {torch.__version__} "
                                f"({'oneDNN' if onednn else 'native'} CPU convolution)")
        elif op == "layer":
            with np.load(msg["arrays"]) as f:
                state = dict(x=f["x"], w=f["w"], b=f["b"], g=f["g"], kwargs=msg["kwargs"])
            y, dx, dw, db = _step(torch, **state)
            np.savez(msg["out"], y=y, dx=dx, dw=dw, db=db)
        elif op == "time":
            part = msg.get("part", "step")
            if part not in ("step", "forward", "grad_input", "grad_weight", "grad_bias"):
                print(json.dumps({"error": f"unknown part {part!r}"}), flush=True)
                continue
            times = []
            for _ in range(int(msg.get("calls", 1))):
                t0 = time.perf_counter()
                if part == "step":
                    _step(torch, **state)
                else:
                    _part(torch, part, **state)
                times.append(time.perf_counter() - t0)
            reply["seconds"] = float(np.median(times))
        elif op == "book":
            reply["seconds"] = _book(torch, msg)
        else:
            reply["error"] = f"unknown op {op!r}"
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
