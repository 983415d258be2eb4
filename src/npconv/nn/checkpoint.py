"""Training checkpoints: one ``.npz`` (read with ``allow_pickle=False``), written atomically.

Layout of the archive::

    format              "npconv-train-checkpoint"          version   1
    config              TrainConfig as JSON
    state               JSON: epoch, batch, step, the shuffling generator's state now
                        and at the start of the epoch, the generators of layers that
                        draw random numbers (Dropout), the history, the partial epoch
    model/<name>        model.state_dict()   ("0.weight", "4.running_mean", ...)
    optim/<key>         optimizer.state_dict()
    schedule/<key>      the learning-rate schedule's state_dict() (when there is one)

The file is written to a temporary name in the same folder and renamed over the old
one (:func:`npconv.nn.module.atomic_savez`), so a crash mid-save leaves the previous
checkpoint intact. Every problem found when reading is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .module import atomic_savez, read_npz
from .train import TrainConfig, Trainer

FORMAT = "npconv-train-checkpoint"
VERSION = 1


def _module_generators(model) -> dict:
    """Layers holding a ``np.random.Generator`` as ``rng`` (Dropout), by name."""
    return {name: m.rng for name, m in model.named_modules()
            if isinstance(getattr(m, "rng", None), np.random.Generator)}


def save_checkpoint(path, trainer: Trainer) -> None:
    """Write everything :func:`load_checkpoint` needs to continue ``trainer`` exactly."""
    state = {
        "epoch": trainer.epoch, "batch": trainer.batch, "step": trainer.step,
        "shuffle_rng": trainer.shuffle_rng.bit_generator.state,
        "epoch_start_rng": trainer.epoch_start_rng,
        "module_rngs": {k: g.bit_generator.state
                        for k, g in _module_generators(trainer.model).items()},
        "history": trainer.history, "partial": trainer.partial,
    }
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION, dtype=np.int64),
              "config": np.array(trainer.config.to_json()), "state": np.array(json.dumps(state))}
    arrays.update((f"model/{k}", v) for k, v in trainer.model.state_dict().items())
    arrays.update((f"optim/{k}", v) for k, v in trainer.optimizer.state_dict().items())
    if trainer.schedule is not None:
        arrays.update((f"schedule/{k}", v) for k, v in trainer.schedule.state_dict().items())
    atomic_savez(path, arrays)


def _section(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def read_checkpoint(path) -> tuple[TrainConfig, dict, dict]:
    """(config, state, arrays) of a checkpoint file, after checking its format."""
    path = os.fspath(path)
    arrays = read_npz(path, "checkpoint")
    try:
        if "format" not in arrays or str(arrays["format"]) != FORMAT:
            raise ValueError("it is not an npconv training checkpoint (no 'format' entry "
                             f"{FORMAT!r}; a model file is loaded with Module.load)")
        version = int(arrays["version"]) if "version" in arrays else None
        if version != VERSION:
            raise ValueError(f"checkpoint format version {version} is not supported "
                             f"(expected {VERSION})")
        for key in ("config", "state"):
            if key not in arrays:
                raise ValueError(f"the {key!r} entry is missing")
        config = TrainConfig.from_json(str(arrays["config"]))
        state = json.loads(str(arrays["state"]))
        missing = [k for k in ("epoch", "batch", "step", "shuffle_rng", "epoch_start_rng",
                               "module_rngs", "history", "partial") if k not in state]
        if missing:
            raise ValueError(f"the training state lacks {missing}")
    except (ValueError, TypeError, KeyError) as exc:  # json errors are ValueErrors
        raise ValueError(f"checkpoint {path!r} is corrupt: {exc}") from exc
    return config, state, arrays


def _set_generator(generator: np.random.Generator, state, what: str) -> None:
    try:
        generator.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"bad generator state for {what}: {exc}") from exc


def restore(trainer: Trainer, state: dict, arrays: dict, path: str = "checkpoint") -> None:
    """Put a checkpoint's state into a freshly built trainer of the same configuration."""
    try:
        trainer.model.load_state_dict(_section(arrays, "model/"))
        trainer.optimizer.load_state_dict(_section(arrays, "optim/"))
        schedule = _section(arrays, "schedule/")
        if (trainer.schedule is None) != (not schedule):
            raise ValueError("the learning-rate schedule does not match the configuration")
        if trainer.schedule is not None:
            trainer.schedule.load_state_dict(schedule)
        _set_generator(trainer.shuffle_rng, state["shuffle_rng"], "shuffling")
        trainer.epoch_start_rng = dict(state["epoch_start_rng"])
        generators = _module_generators(trainer.model)
        if set(generators) != set(state["module_rngs"]):
            raise ValueError(f"random layers {sorted(state['module_rngs'])} do not match the "
                             f"model's {sorted(generators)}")
        for name, g in generators.items():
            _set_generator(g, state["module_rngs"][name], f"layer {name}")
        epoch, batch, step = (int(state[k]) for k in ("epoch", "batch", "step"))
        if not (0 <= batch <= trainer.batches_per_epoch and epoch >= 0 and step >= 0):
            raise ValueError(f"position epoch {epoch}, batch {batch} is impossible with "
                             f"{trainer.batches_per_epoch} batches per epoch")
        trainer.epoch, trainer.batch, trainer.step = epoch, batch, step
        trainer.history, trainer.partial = state["history"], state["partial"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"checkpoint {path!r} cannot be resumed: {exc}") from exc


def load_checkpoint(path, dataset=None, **overrides) -> Trainer:
    """A :class:`Trainer` that continues the run saved in ``path``.

    ``overrides`` may change :attr:`TrainConfig.FREE` fields (``epochs`` to train
    longer, ``data_dir``, ``algorithm``); any other field that differs from the saved
    configuration is a ``ValueError`` (the run would not be the same run).
    """
    config, state, arrays = read_checkpoint(path)
    conflicts = {k: (getattr(config, k), v) for k, v in overrides.items()
                 if v is not None and k not in TrainConfig.FREE and getattr(config, k) != v}
    if conflicts:
        text = ", ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in conflicts.items())
        raise ValueError(f"checkpoint {os.fspath(path)!r} was made with different settings "
                         f"({text}); drop those options to resume it")
    for key in TrainConfig.FREE:
        if overrides.get(key) is not None:
            setattr(config, key, overrides[key])
    trainer = Trainer(config.validated(), dataset)
    restore(trainer, state, arrays, os.fspath(path))
    return trainer
