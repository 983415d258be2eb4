"""Where one LeNet-5 training step spends its time, layer by layer, npconv vs PyTorch.

Times, for Fashion-MNIST batches of shape (64, 1, 28, 28) in float32, the forward and
the backward pass of every layer, the loss (forward + backward), the optimiser step
(Adam), gathering a shuffled batch, and the whole ``Trainer.train_step`` (so that the
difference to the sum of the parts is the per-step Python overhead). Medians over
``--repeats`` runs, in microseconds. Each framework runs in its own process (see
benchmarks/train_lenet5.py for why), with 2 threads by default.

    python benchmarks/profile_lenet5.py                 # both, side by side
    python benchmarks/profile_lenet5.py --only npconv   # one framework

Not a test: nothing here gates CI on a wall-clock number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# npconv first: it sets up the thread pools' environment (GOMP_SPINCOUNT,
# OPENBLAS_THREAD_TIMEOUT) before NumPy loads OpenBLAS, as the npconv command does
import npconv

# isort: split
import numpy as np


def median_us(fn, repeats: int) -> float:
    fn()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1e6 * float(np.median(times))


def batches(args):
    from npconv.data import load_dataset

    data = load_dataset("fashion-mnist", train_size=args.train_size, test_size=1)
    order = np.random.default_rng(0).permutation(len(data.train_labels))
    return data, order


def profile_npconv(args) -> dict:
    from npconv.nn.train import TrainConfig, Trainer

    npconv.set_num_threads(args.threads)
    data, order = batches(args)
    trainer = Trainer(TrainConfig.for_model("lenet5", dataset="fashion-mnist"), data)
    model, criterion, opt = trainer.model, trainer.criterion, trainer.optimizer
    bs = trainer.config.batch_size
    x, labels = data.train_images[order[:bs]], data.train_labels[order[:bs]]
    rows = {}
    rows["batch gather"] = median_us(
        lambda: (data.train_images[order[bs:2 * bs]], data.train_labels[order[bs:2 * bs]]),
        args.repeats)
    layers = list(model)
    inputs = [x]
    for layer in layers:
        inputs.append(layer.forward(inputs[-1]))
    logits = inputs[-1]
    criterion(logits, labels)
    grads = [criterion.backward()]
    for i in range(len(layers) - 1, -1, -1):
        grads.append(layers[i].backward(grads[-1], input_grad=i > 0))
    grads = grads[::-1]  # grads[i + 1]: dL/d(output of layer i)
    for i, layer in enumerate(layers):
        name = f"{i} {type(layer).__name__}"
        rows[f"{name} fwd"] = median_us(lambda lay=layer, a=inputs[i]: lay.forward(a),
                                        args.repeats)
        rows[f"{name} bwd"] = median_us(
            lambda lay=layer, a=inputs[i], g=grads[i + 1], first=i == 0: (
                lay.forward(a), lay.backward(g, input_grad=not first)), args.repeats) \
            - rows[f"{name} fwd"]
    rows["loss fwd+bwd"] = median_us(lambda: (criterion(logits, labels),
                                              criterion.backward()), args.repeats)
    rows["optimizer step"] = median_us(opt.step, args.repeats)
    rows["train_step"] = median_us(lambda: trainer.train_step(x, labels), args.repeats)
    rows.update(in_situ(trainer, data, order, args.repeats))
    dtypes = {f"{i} {type(lay).__name__}": str(out.dtype)
              for i, (lay, out) in enumerate(zip(layers, inputs[1:], strict=True))}
    return {"rows": rows, "dtypes": dtypes}


def in_situ(trainer, data, order, repeats: int) -> dict:
    """Each layer's forward and backward timed inside real training steps (fresh batches,
    caches and threads as the loop leaves them): ``"... fwd (in loop)"`` rows."""
    import time as clock

    times: dict[str, list[float]] = {}

    def timed(name, method):
        def wrapper(*a, **kw):
            started = clock.perf_counter()
            out = method(*a, **kw)
            times.setdefault(name, []).append(clock.perf_counter() - started)
            return out
        return wrapper

    for i, layer in enumerate(trainer.model):
        name = f"{i} {type(layer).__name__}"
        layer.forward = timed(f"{name} fwd (in loop)", layer.forward)
        layer.backward = timed(f"{name} bwd (in loop)", layer.backward)
    opt = trainer.optimizer
    opt.step = timed("optimizer step (in loop)", opt.step)
    bs = trainer.config.batch_size
    steps = []
    for b in range(repeats + 5):
        idx = order[(b % (len(order) // bs)) * bs:][:bs]
        started = clock.perf_counter()
        trainer.train_step(data.train_images[idx], data.train_labels[idx])
        steps.append(clock.perf_counter() - started)
    for layer in trainer.model:  # back to the class's methods
        del layer.forward, layer.backward
    del opt.step
    rows = {k: 1e6 * float(np.median(v[5:])) for k, v in times.items()}
    rows["train_step (in loop)"] = 1e6 * float(np.median(steps[5:]))
    return rows


def profile_torch(args) -> dict:
    import torch

    from npconv.nn.train import TrainConfig, Trainer

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_lenet5 import torch_twin

    torch.set_num_threads(args.threads)
    data, order = batches(args)
    trainer = Trainer(TrainConfig.for_model("lenet5", dataset="fashion-mnist"), data)
    model = torch_twin(trainer.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    bs = trainer.config.batch_size
    x = torch.from_numpy(data.train_images[order[:bs]])
    labels = torch.from_numpy(data.train_labels[order[:bs]])
    rows = {}
    rows["batch gather"] = median_us(
        lambda: (torch.from_numpy(data.train_images[order[bs:2 * bs]]),
                 torch.from_numpy(data.train_labels[order[bs:2 * bs]])), args.repeats)
    layers = list(model)
    with torch.no_grad():
        inputs = [x]
        for layer in layers:
            inputs.append(layer(inputs[-1]))
    for i, layer in enumerate(layers):
        name = f"{i} {type(layer).__name__}"
        a = inputs[i].clone().requires_grad_(i > 0)
        g = torch.randn_like(inputs[i + 1])

        def fwd(layer=layer, a=a):
            return layer(a)

        def fwd_bwd(layer=layer, a=a, g=g):
            layer(a).backward(g)

        rows[f"{name} fwd"] = median_us(fwd, args.repeats)
        rows[f"{name} bwd"] = median_us(fwd_bwd, args.repeats) - rows[f"{name} fwd"]
    logits = inputs[-1].clone().requires_grad_(True)
    rows["loss fwd+bwd"] = median_us(lambda: loss_fn(logits, labels).backward(),
                                     args.repeats)
    model(x).sum().backward()
    rows["optimizer step"] = median_us(opt.step, args.repeats)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), labels).backward()
        opt.step()

    rows["train_step"] = median_us(step, args.repeats)
    return {"rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--train-size", type=int, default=6400)
    p.add_argument("--only", choices=("npconv", "torch"))
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if args.only:
        if args.only == "torch":
            npconv._undo_thread_defaults()  # PyTorch loads OpenMP with its own defaults
            import torch  # noqa: F401
        result = profile_npconv(args) if args.only == "npconv" else profile_torch(args)
        results = {args.only: result}
    else:
        results = {}
        for framework in ("npconv", "torch"):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "rows.json")
                cmd = [sys.executable, __file__, *(argv or sys.argv[1:]), "--only",
                       framework, "--json", out]
                env = dict(os.environ)  # without the settings npconv chose in this process
                npconv._undo_thread_defaults(env)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
                with open(out) as f:
                    results.update(json.load(f))
    names = list(next(iter(results.values()))["rows"])
    frameworks = list(results)
    print(f"LeNet-5, batch (64, 1, 28, 28) float32, {args.threads} threads, median us")
    print(f"{'':24}" + "".join(f"{f:>10}" for f in frameworks))
    for name in names:
        cells = "".join(f"{results[f]['rows'].get(name, float('nan')):10.0f}"
                        for f in frameworks)
        print(f"{name:24}{cells}")
    for f in frameworks:
        r = results[f]["rows"]
        parts = sum(v for k, v in r.items() if "train_step" not in k and "loop" not in k)
        print(f"{f}: sum of parts {parts:.0f} us, train_step {r['train_step']:.0f} us")
        loop = [v for k, v in r.items() if k.endswith("(in loop)") and "train_step" not in k]
        if loop:
            print(f"{f} in the loop: layers + optimizer {sum(loop):.0f} us, train_step "
                  f"{r['train_step (in loop)']:.0f} us (the rest: loss, Python)")
    if "npconv" in results:
        upcast = {k: v for k, v in results["npconv"]["dtypes"].items() if v != "float32"}
        print("npconv layer outputs not float32:", upcast or "none")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
