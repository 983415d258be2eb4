"""The training loop: configuration, one step, epochs with test accuracy, resumable state.

A :class:`Trainer` owns everything that determines the next step: the model, the
optimiser and its schedule, the shuffling generator (and its state at the start of the
epoch, so an epoch's order can be drawn again), the position (epoch, batch, step) and
the statistics gathered so far. :mod:`npconv.nn.checkpoint` saves and restores all of
it, so an interrupted run resumes exactly where it stopped and then produces the same
numbers, bit for bit, as a run that was never interrupted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np

from .. import optim
from ..data import Dataset, load_dataset
from .loss import SoftmaxCrossEntropy
from .models import DATASET_EPOCHS, MODELS, RECIPES, build_model

OPTIMIZERS = ("adam", "sgd")
EVAL_BATCH = 500


@dataclass
class TrainConfig:
    """Everything that defines a training run (``npconv train``'s options).

    ``lr_step = 0`` keeps the learning rate constant; otherwise it is multiplied by
    ``lr_gamma`` every ``lr_step`` steps (batches). ``train_size`` / ``test_size`` keep
    the first images of each split (None: all). ``algorithm`` picks the convolution
    algorithm; it changes rounding only, so a resumed run may change it.
    """

    dataset: str = "shapes"
    model: str = "book"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_step: int = 500
    lr_gamma: float = 0.9
    seed: int = 0
    train_size: int | None = None
    test_size: int | None = None
    data_dir: str | None = None
    algorithm: str = "auto"

    # options that do not change the numbers: a resumed run may set them differently
    FREE = ("epochs", "data_dir", "algorithm")

    @classmethod
    def for_model(cls, model: str | None = "book", **overrides) -> TrainConfig:
        """The model's recipe (:data:`RECIPES`) with ``overrides`` (None values ignored)."""
        model = model or "book"
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
        values = dict(RECIPES[model], model=model)
        values.update((k, v) for k, v in overrides.items() if v is not None)
        if overrides.get("epochs") is None and values.get("dataset", "shapes") in DATASET_EPOCHS:
            values["epochs"] = DATASET_EPOCHS[values.get("dataset", "shapes")]
        return cls(**values).validated()

    def validated(self) -> TrainConfig:
        """Self, after checking every field (ValueError naming the field)."""
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of "
                             f"{OPTIMIZERS}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.data_dir is not None and self.dataset == "shapes":
            raise ValueError("--data (data_dir) names an MNIST-format folder; the shapes "
                             "data set is generated, choose --dataset fashion-mnist or mnist")
        if self.lr <= 0 or self.lr_step < 0 or self.lr_gamma <= 0:
            raise ValueError(f"need lr > 0, lr_step >= 0 and lr_gamma > 0, got lr={self.lr}, "
                             f"lr_step={self.lr_step}, lr_gamma={self.lr_gamma}")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown configuration fields {unknown}")
        return cls(**values).validated()


def make_optimizer(config: TrainConfig, model):
    if config.optimizer == "adam":
        opt = optim.Adam(model, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = optim.SGD(model, lr=config.lr, momentum=config.momentum,
                        nesterov=config.nesterov, weight_decay=config.weight_decay)
    schedule = optim.StepLR(opt, config.lr_step, config.lr_gamma) if config.lr_step else None
    return opt, schedule


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch_size: int = EVAL_BATCH):
    """Accuracy and predictions (int64, shape (N,)) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    predictions = np.empty(len(images), dtype=np.int64)
    for start in range(0, len(images), batch_size):
        logits = model.forward(images[start:start + batch_size])  # (B, classes)
        predictions[start:start + batch_size] = logits.argmax(axis=1)
    model.train(was_training)
    accuracy = float(np.mean(predictions == labels)) if len(labels) else 0.0
    return accuracy, predictions


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int):
    """Counts of shape (K, K): row = true class, column = predicted class (int64)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


class Trainer:
    """Train ``config.model`` on ``config.dataset`` (or on ``dataset`` when given).

    Attributes
    ----------
    epoch, batch, step : int
        The next epoch (0-based), the next batch within it, steps taken so far.
    history : dict
        ``"step_loss"`` (one float per step) and ``"epochs"`` (one dict per finished
        epoch: train_loss, train_acc, test_acc, seconds, images_per_s).
    """

    def __init__(self, config: TrainConfig, dataset: Dataset | None = None):
        self.config = config.validated()
        self.data = dataset if dataset is not None else load_dataset(
            config.dataset, config.data_dir, train_size=config.train_size,
            test_size=config.test_size)
        d = self.data
        self.model = build_model(config.model, d.in_channels, d.image_size, d.num_classes,
                                 seed=config.seed, algorithm=config.algorithm)
        self.criterion = SoftmaxCrossEntropy()
        self.optimizer, self.schedule = make_optimizer(config, self.model)
        self.shuffle_rng = np.random.default_rng([config.seed, 1])
        self.epoch_start_rng = self.shuffle_rng.bit_generator.state
        self.epoch = self.batch = self.step = 0
        self.history: dict = {"step_loss": [], "epochs": []}
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.stop_requested = False

    # ------------------------------------------------------------------ geometry
    @property
    def batches_per_epoch(self) -> int:
        """ceil(N / batch); a last batch of one image is dropped (BatchNorm needs two)."""
        n, bs = len(self.data.train_labels), self.config.batch_size
        return n // bs + (1 if n % bs > 1 else 0)

    def _epoch_order(self) -> np.ndarray:
        """This epoch's permutation; drawn again from the saved state when resuming."""
        if self.batch == 0:
            self.epoch_start_rng = self.shuffle_rng.bit_generator.state
        else:
            self.shuffle_rng.bit_generator.state = self.epoch_start_rng
        return self.shuffle_rng.permutation(len(self.data.train_labels))

    # ------------------------------------------------------------------ one step
    def train_step(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """Forward, backward and update on one batch; returns (loss, correct predictions)."""
        self.model.train()
        logits = self.model.forward(images)  # (B, classes)
        loss = self.criterion(logits, labels)
        self.model.backward(self.criterion.backward(), input_grad=False)
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        self.step += 1
        return float(loss), int(np.sum(logits.argmax(axis=1) == labels))

    # ------------------------------------------------------------------ the loop
    def fit(self, *, max_steps: int | None = None,
            on_step: Callable[[Trainer], None] | None = None,
            on_epoch_start: Callable[[Trainer], None] | None = None,
            on_epoch_end: Callable[[Trainer, dict], None] | None = None) -> bool:
        """Train until ``config.epochs`` are done; True when finished.

        Stops early (returning False, with a consistent state that a checkpoint can
        save) after ``max_steps`` steps in this call or when ``stop_requested`` is set.
        """
        cfg, d = self.config, self.data
        bs, nb = cfg.batch_size, self.batches_per_epoch
        taken = 0
        def stop() -> bool:
            return self.stop_requested or (max_steps is not None and taken >= max_steps)

        while self.epoch < cfg.epochs:
            if stop():  # before the order is drawn, so a resumed run draws the same one
                return False
            order = self._epoch_order()
            if on_epoch_start is not None:
                on_epoch_start(self)
            while self.batch < nb:
                if stop():
                    return False
                idx = order[self.batch * bs:(self.batch + 1) * bs]
                started = time.perf_counter()
                loss, correct = self.train_step(d.train_images[idx], d.train_labels[idx])
                p = self.partial
                p["seconds"] += time.perf_counter() - started
                p["loss_sum"] += loss * len(idx)
                p["correct"] += correct
                p["seen"] += len(idx)
                self.history["step_loss"].append(loss)
                self.batch += 1
                taken += 1
                if on_step is not None:
                    on_step(self)
            record = self._finish_epoch()
            if on_epoch_end is not None:
                on_epoch_end(self, record)
        return True

    def _finish_epoch(self) -> dict:
        p = self.partial
        started = time.perf_counter()
        test_acc, _ = evaluate(self.model, self.data.test_images, self.data.test_labels)
        record = {"epoch": self.epoch + 1, "steps": self.step,
                  "train_loss": p["loss_sum"] / max(p["seen"], 1),
                  "train_acc": p["correct"] / max(p["seen"], 1), "test_acc": test_acc,
                  "seconds": p["seconds"], "images_per_s": p["seen"] / max(p["seconds"], 1e-9),
                  "eval_seconds": time.perf_counter() - started}
        self.history["epochs"].append(record)
        self.epoch += 1
        self.batch = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        return record

    def running_stats(self) -> dict:
        """Loss, accuracy and images/s of the current epoch so far."""
        p = self.partial
        seen = max(p["seen"], 1)
        return {"loss": p["loss_sum"] / seen, "acc": p["correct"] / seen,
                "rate": p["seen"] / max(p["seconds"], 1e-9)}

    def test_confusion(self) -> np.ndarray:
        """Confusion matrix of shape (K, K) of the current model on the test split."""
        _, predictions = evaluate(self.model, self.data.test_images, self.data.test_labels)
        return confusion_matrix(self.data.test_labels, predictions, self.data.num_classes)
