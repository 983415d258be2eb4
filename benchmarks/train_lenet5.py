"""Train the same LeNet-5 (or the book's model) in npconv and in PyTorch CPU, and time them.

Both frameworks start from the same initial weights (npconv's seeded initialisation,
loaded into PyTorch), see the same batches in the same order, use the same recipe
(Adam, batch 64; the book model adds the 0.9-every-500-steps schedule) and the same
number of threads. Prints one line per epoch: training seconds (evaluation excluded)
and test accuracy of each.

Each framework trains in its own process, one after the other, each with its
threading defaults: PyTorch's OpenMP threads spin for a few milliseconds while idle (its
default), npconv asks for a short spin (GOMP_SPINCOUNT), and the two settings cannot
share one process (the OpenMP runtime reads them once, when the first of them loads it).

    python benchmarks/train_lenet5.py                       # LeNet-5, 10 epochs, 2 threads
    python benchmarks/train_lenet5.py --model book --epochs 5
    python benchmarks/train_lenet5.py --epochs 1 --train-size 6400 --only npconv

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

KEYS = ("npconv_s", "torch_s", "npconv_acc", "torch_acc")


def torch_twin(model):
    """The torch.nn.Sequential with the same layers and weights as npconv's ``model``."""
    import torch

    import npconv.nn as nn

    twins = {nn.Conv2d: lambda m: torch.nn.Conv2d(m.in_channels, m.out_channels,
                                                  m.kernel_size, m.stride, m.padding),
             nn.Linear: lambda m: torch.nn.Linear(m.in_features, m.out_features),
             nn.BatchNorm1d: lambda m: torch.nn.BatchNorm1d(m.num_features),
             nn.MaxPool2d: lambda m: torch.nn.MaxPool2d(m.kernel_size, m.stride, m.padding),
             nn.ReLU: lambda m: torch.nn.ReLU(), nn.Flatten: lambda m: torch.nn.Flatten()}
    twin = torch.nn.Sequential(*(twins[type(layer)](layer) for layer in model))
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


def run_torch(args, trainer, orders):
    import torch

    torch.set_num_threads(args.threads)
    cfg, data = trainer.config, trainer.data
    model = torch_twin(trainer.model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = (torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma)
                if cfg.lr_step else None)
    loss_fn = torch.nn.CrossEntropyLoss()
    bs, rows = cfg.batch_size, []
    for order in orders:
        model.train()
        started = time.perf_counter()
        for b in range(trainer.batches_per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            x, y = torch.from_numpy(data.train_images[idx]), torch.from_numpy(
                data.train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            if schedule is not None:
                schedule.step()
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(data.test_images)).numpy()
        rows.append({"torch_s": seconds,
                     "torch_acc": float(np.mean(logits.argmax(1) == data.test_labels))})
        print(f"torch epoch {len(rows)}: {seconds:.1f} s, {100 * rows[-1]['torch_acc']:.2f}%",
              file=sys.stderr, flush=True)
    return rows


def run_npconv(args, trainer, orders):
    from npconv.nn.train import evaluate

    npconv.set_num_threads(args.threads)
    data, bs, rows = trainer.data, trainer.config.batch_size, []
    for order in orders:
        started = time.perf_counter()
        for b in range(trainer.batches_per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            trainer.train_step(data.train_images[idx], data.train_labels[idx])
        seconds = time.perf_counter() - started
        acc, _ = evaluate(trainer.model, data.test_images, data.test_labels)
        rows.append({"npconv_s": seconds, "npconv_acc": acc})
        print(f"npconv epoch {len(rows)}: {seconds:.1f} s, {100 * acc:.2f}%",
              file=sys.stderr, flush=True)
    return rows


def run_one(args) -> list[dict]:
    """Train one framework in this process (``args.only``)."""
    if args.only == "torch":
        npconv._undo_thread_defaults()  # PyTorch loads OpenMP with its own defaults
        import torch  # noqa: F401
    from npconv.data import load_dataset
    from npconv.nn.train import TrainConfig, Trainer

    data = load_dataset(args.dataset, train_size=args.train_size)
    config = TrainConfig.for_model(args.model, dataset=args.dataset, epochs=args.epochs,
                                   seed=args.seed)
    trainer = Trainer(config, data)
    rng = np.random.default_rng([args.seed, 2])
    orders = [rng.permutation(len(data.train_labels)) for _ in range(args.epochs)]
    run = run_torch if args.only == "torch" else run_npconv
    return run(args, trainer, orders)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("lenet5", "book"), default="lenet5")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int)
    p.add_argument("--only", choices=("npconv", "torch"))
    p.add_argument("--json", metavar="FILE", help="write the per-epoch figures here")
    args = p.parse_args(argv)
    if args.only:
        rows = run_one(args)
    else:
        rows = [{"epoch": e + 1} for e in range(args.epochs)]
        for framework in ("torch", "npconv"):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "rows.json")
                cmd = [sys.executable, __file__, *(argv or sys.argv[1:]), "--only", framework,
                       "--json", out]
                env = dict(os.environ)  # without the settings npconv chose in this process
                npconv._undo_thread_defaults(env)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
                with open(out) as f:
                    for row, got in zip(rows, json.load(f)["epochs"], strict=True):
                        row.update(got)
    print(f"{args.model} on {args.dataset}, batch 64, {args.threads} threads")
    print(f"{'epoch':>5} {'npconv s':>9} {'torch s':>8} {'npconv acc':>11} {'torch acc':>10}")
    for e, row in enumerate(rows, 1):
        cells = [f"{row[k]:9.1f}" if k in row else f"{'-':>9}" for k in KEYS[:2]]
        accs = [f"{100 * row[k]:10.2f}%" if k in row else f"{'-':>11}" for k in KEYS[2:]]
        print(f"{e:5d} {cells[0]} {cells[1]} {accs[0]} {accs[1]}")
    for key in KEYS[:2]:
        times = [r[key] for r in rows if key in r]
        if times:
            print(f"{key[:-2]}: median epoch {np.median(times):.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "epochs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
