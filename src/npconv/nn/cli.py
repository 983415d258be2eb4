"""``npconv train``: train the book's CNN or LeNet-5 on shapes, Fashion-MNIST or MNIST.

Each epoch shows a progress bar with the running loss, accuracy and images per second,
then the test accuracy; at the end, a confusion matrix on the test set. With
``--checkpoint FILE`` the whole training state is saved atomically after every epoch
(and every ``--checkpoint-every`` steps, and on Ctrl-C, which finishes the current
step first); ``--resume`` continues it exactly as if it had never stopped.
"""

from __future__ import annotations

import argparse
import signal

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..algorithms import ALGORITHMS
from ..data import DATASETS
from .checkpoint import load_checkpoint, save_checkpoint
from .models import MODELS
from .report import confusion_table, save_training_plot
from .train import OPTIMIZERS, TrainConfig, Trainer

EPILOG = """\
examples:
  npconv train                                   # book model on generated shapes (~30 s)
  npconv train --dataset fashion-mnist --model lenet5 --epochs 10 --plot lenet5.png
  npconv train --dataset fashion-mnist --model book --checkpoint run.npz
  npconv train --checkpoint run.npz --resume     # continue an interrupted run
  npconv train --dataset mnist --data ~/mnist --save mnist-book.npz
  npconv train --optimizer sgd --lr 0.05 --momentum 0.9 --nesterov --lr-step 0

recipes (the defaults of each model):
  book    Adam, lr 0.01 x0.9 every 500 steps, batch 64, 5 epochs
  lenet5  Adam, lr 1e-3 constant, batch 64, 10 epochs
  (on the shapes data set both train 10 epochs)

Fashion-MNIST is read from Debian's dataset-fashion-mnist package
(/usr/share/datasets/fashion-mnist); --data DIR reads any folder holding the four
MNIST-format files (gzipped or not). Nothing is downloaded.
"""


def _overrides(args) -> dict:
    return {"dataset": args.dataset, "model": args.model, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer,
            "momentum": args.momentum, "nesterov": args.nesterov,
            "weight_decay": args.weight_decay, "lr_step": args.lr_step,
            "lr_gamma": args.lr_gamma, "seed": args.seed, "train_size": args.train_size,
            "test_size": args.test_size, "data_dir": args.data, "algorithm": args.algorithm}


def _describe(console: Console, trainer: Trainer) -> None:
    cfg, d = trainer.config, trainer.data
    params = sum(p.data.size for p in trainer.model.parameters())
    console.print(f"data: {d.name} from {d.source}: {len(d.train_labels)} train / "
                  f"{len(d.test_labels)} test images of {d.train_images.shape[1:]}, "
                  f"{d.num_classes} classes"
                  + ("" if d.mean is None else f", standardised with the train split's mean "
                     f"{np.round(d.mean, 4).tolist()} and std {np.round(d.std, 4).tolist()}"))
    schedule = (f"x{cfg.lr_gamma} every {cfg.lr_step} steps" if cfg.lr_step else "constant")
    console.print(f"model: {cfg.model} ({params:,} parameters); {cfg.optimizer}, lr "
                  f"{cfg.lr} {schedule}, batch {cfg.batch_size}, {cfg.epochs} epochs, "
                  f"seed {cfg.seed}, convolution algorithm {cfg.algorithm!r}")


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.2%}  "
                   "{task.fields[rate]:,.0f} img/s"),
        TimeElapsedColumn(), console=console, disable=not enabled)


def handle(args: argparse.Namespace) -> int:
    if args.threads is not None:
        from ..tuning import set_num_threads

        set_num_threads(args.threads)
    console = Console(soft_wrap=True)  # whole lines in logs, not 80-column pieces
    overrides = _overrides(args)
    if args.resume:
        if not args.checkpoint:
            raise ValueError("--resume needs --checkpoint FILE (the file to continue)")
        trainer = load_checkpoint(args.checkpoint, **overrides)
        console.print(f"resuming {args.checkpoint}: epoch {trainer.epoch + 1}, batch "
                      f"{trainer.batch} (step {trainer.step})")
    else:
        trainer = Trainer(TrainConfig.for_model(**overrides))
    _describe(console, trainer)
    cfg, every = trainer.config, args.checkpoint_every

    def save():
        if args.checkpoint:
            save_checkpoint(args.checkpoint, trainer)

    def on_interrupt(signum, frame):
        trainer.stop_requested = True  # finish this step, save, stop
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C stops at once

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with _progress(console, not args.no_progress) as progress:
            task = {}

            def on_epoch_start(t):
                task["id"] = progress.add_task(f"epoch {t.epoch + 1}/{cfg.epochs}",
                                               total=t.batches_per_epoch, completed=t.batch,
                                               **t.running_stats())

            def on_step(t):
                progress.update(task["id"], completed=t.batch, **t.running_stats())
                if every and t.step % every == 0:
                    save()

            def on_epoch_end(t, r):
                progress.console.print(
                    f"epoch {r['epoch']}/{cfg.epochs}: train loss {r['train_loss']:.4f}, "
                    f"train acc {r['train_acc']:.2%}, test acc {r['test_acc']:.2%} | "
                    f"{r['seconds']:.1f} s, {r['images_per_s']:,.0f} images/s")
                save()

            finished = trainer.fit(max_steps=args.max_steps, on_step=on_step,
                                   on_epoch_start=on_epoch_start, on_epoch_end=on_epoch_end)
    finally:
        signal.signal(signal.SIGINT, previous)
    if not finished:
        save()
        where = f"epoch {trainer.epoch + 1}, batch {trainer.batch}"
        if args.checkpoint:
            console.print(f"interrupted at {where}; saved {args.checkpoint}. Continue with: "
                          f"npconv train --checkpoint {args.checkpoint} --resume")
        else:
            console.print(f"interrupted at {where} (no --checkpoint: nothing saved)")
        return 130
    console.print(confusion_table(trainer.test_confusion(), trainer.data.classes))
    if trainer.history["epochs"]:
        console.print(f"final test accuracy: {trainer.history['epochs'][-1]['test_acc']:.2%}")
    if args.save:
        trainer.model.save(args.save)
        console.print(f"model saved to {args.save} (load with Module.load, or into PyTorch)")
    if args.plot:
        first = next(p for _, p in trainer.model.named_parameters())
        save_training_plot(args.plot, trainer.history, first.data,
                           f"{cfg.model} on {cfg.dataset}")
        console.print(f"plot saved to {args.plot}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train the book's CNN or LeNet-5 (shapes, Fashion-MNIST, MNIST)",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", choices=DATASETS, default=None, help="default: shapes")
    g.add_argument("--data", metavar="DIR", help="an MNIST-format folder (default: Debian's)")
    g.add_argument("--model", choices=sorted(MODELS), default=None, help="default: book")
    g.add_argument("--train-size", type=int, metavar="N", help="use the first N train images")
    g.add_argument("--test-size", type=int, metavar="N", help="use the first N test images")
    g = p.add_argument_group("recipe (defaults: the model's, see below)")
    g.add_argument("--epochs", type=int, metavar="N")
    g.add_argument("--batch-size", type=int, metavar="N")
    g.add_argument("--lr", type=float, metavar="LR", help="initial learning rate")
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--momentum", type=float, metavar="M", help="SGD momentum (default 0.9)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    g.add_argument("--weight-decay", type=float, metavar="WD", help="L2 penalty (default 0)")
    g.add_argument("--lr-step", type=int, metavar="STEPS",
                   help="multiply the learning rate by --lr-gamma every STEPS steps (0: never)")
    g.add_argument("--lr-gamma", type=float, metavar="G")
    g.add_argument("--seed", type=int, help="seeds initialisation and shuffling (default 0)")
    g = p.add_argument_group("running")
    g.add_argument("--algorithm", choices=("auto", *ALGORITHMS), default=None,
                   help="convolution algorithm (default auto)")
    g.add_argument("--threads", type=int, metavar="N", help="Numba and BLAS threads")
    g.add_argument("--checkpoint", metavar="FILE", help="save the training state here (.npz)")
    g.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="also save every STEPS steps (default: after each epoch only)")
    g.add_argument("--resume", action="store_true", help="continue the run in --checkpoint")
    g.add_argument("--max-steps", type=int, metavar="N",
                   help="stop after N steps of this run, as Ctrl-C does (checkpoint saved)")
    g.add_argument("--save", metavar="FILE.npz", help="save the trained model's state_dict")
    g.add_argument("--plot", metavar="FILE.png", help="loss/accuracy curves and kernels")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=handle, command="train")

