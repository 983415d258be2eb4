"""Training end to end: the loss falls, checkpoints resume bit for bit, bad files are refused."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from npconv.cli import main
from npconv.data import DEFAULT_DIRS, load_dataset
from npconv.nn import module as nn_module
from npconv.nn.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from npconv.nn.train import TrainConfig, Trainer

HAVE_FASHION = os.path.isfile(os.path.join(DEFAULT_DIRS["fashion-mnist"],
                                           "train-images-idx3-ubyte.gz"))


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", train_size=640, test_size=200)


def _mean_loss(trainer, first, last):
    losses = trainer.history["step_loss"]
    return np.mean(losses[first:last])


@pytest.mark.parametrize("model,lr,epochs", [("book", None, 2), ("lenet5", 3e-3, 3)])
def test_shapes_loss_falls(shapes, model, lr, epochs):
    config = TrainConfig.for_model(model, epochs=epochs, batch_size=32, lr=lr)
    trainer = Trainer(config, shapes)
    assert trainer.fit()
    assert _mean_loss(trainer, -10, None) < 0.8 * _mean_loss(trainer, 0, 5)
    assert [e["epoch"] for e in trainer.history["epochs"]] == list(range(1, epochs + 1))
    assert trainer.step == epochs * 20 and trainer.model.dtype == np.float32


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_slice_loss_falls():
    data = load_dataset("fashion-mnist", train_size=1280, test_size=500)
    trainer = Trainer(TrainConfig.for_model("book", dataset="fashion-mnist", epochs=1), data)
    trainer.fit()
    assert _mean_loss(trainer, -5, None) < 0.7 * _mean_loss(trainer, 0, 5)
    assert trainer.history["epochs"][0]["test_acc"] > 0.4  # chance is 0.1


def _same_run(a: Trainer, b: Trainer):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)
    assert a.history["step_loss"] == b.history["step_loss"]
    assert [e["test_acc"] for e in a.history["epochs"]] == [
        e["test_acc"] for e in b.history["epochs"]]
    assert a.optimizer.lr == b.optimizer.lr and (a.epoch, a.batch, a.step) == (
        b.epoch, b.batch, b.step)


@pytest.mark.parametrize("stop_after", [7, 20, 33], ids=["mid-epoch", "epoch-end", "later"])
def test_resume_is_bit_for_bit(shapes, tmp_path, stop_after):
    config = TrainConfig.for_model("book", epochs=3, batch_size=32, lr_step=6)
    whole = Trainer(config, shapes)
    whole.fit()
    first = Trainer(config, shapes)
    assert not first.fit(max_steps=stop_after)
    save_checkpoint(tmp_path / "run.npz", first)
    resumed = load_checkpoint(tmp_path / "run.npz", dataset=shapes)
    assert resumed.step == stop_after
    assert resumed.fit()
    _same_run(whole, resumed)


def test_resume_restores_dropout_masks(shapes, tmp_path, monkeypatch):
    """Layers that draw random numbers (Dropout) resume with their generator's state."""
    import npconv.nn as nn
    from npconv.nn import train

    def with_dropout(name, in_channels, image_size, num_classes, *, seed, algorithm):
        rng = np.random.default_rng(seed)
        return nn.Sequential(nn.Conv2d(in_channels, 4, 5, rng=rng, algorithm=algorithm),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5, rng=rng),
                             nn.Linear(4 * 12 * 12, num_classes, rng=rng))

    monkeypatch.setattr(train, "build_model", with_dropout)
    config = TrainConfig.for_model("book", epochs=2, batch_size=32)
    whole = Trainer(config, shapes)
    whole.fit()
    first = Trainer(config, shapes)
    first.fit(max_steps=9)
    save_checkpoint(tmp_path / "run.npz", first)
    resumed = load_checkpoint(tmp_path / "run.npz", dataset=shapes)
    resumed.fit()
    _same_run(whole, resumed)


def test_cli_train_checkpoint_resume_plot_save(tmp_path, capsys):
    ckpt, plot, saved = tmp_path / "run.npz", tmp_path / "run.png", tmp_path / "model.npz"
    common = ["train", "--train-size", "320", "--test-size", "100", "--epochs", "2",
              "--batch-size", "32", "--no-progress", "--checkpoint", str(ckpt)]
    assert main([*common, "--max-steps", "13"]) == 130
    assert "Continue with: npconv train --checkpoint" in capsys.readouterr().out
    assert main(["train", "--checkpoint", str(ckpt), "--resume", "--no-progress",
                 "--plot", str(plot), "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "epoch 2/2" in out and "confusion matrix" in out
    assert plot.stat().st_size > 10_000 and saved.exists()
    _, state, _ = read_checkpoint(ckpt)
    assert (state["epoch"], state["batch"], state["step"]) == (2, 0, 20)
    # the same run without interruption ends in the same state
    assert main([*common[:-1], str(tmp_path / "whole.npz")]) == 0
    whole = load_checkpoint(tmp_path / "whole.npz")
    _same_run(whole, load_checkpoint(ckpt))


def test_cli_resume_refuses_other_settings(tmp_path, capsys):
    ckpt = tmp_path / "run.npz"
    args = ["train", "--train-size", "64", "--test-size", "32", "--epochs", "1",
            "--no-progress", "--checkpoint", str(ckpt)]
    assert main(args) == 0
    assert main(["train", "--checkpoint", str(ckpt), "--resume", "--lr", "0.5"]) == 2
    assert "lr: saved 0.01, given 0.5" in capsys.readouterr().err
    assert main(["train", "--resume"]) == 2
    assert main(["train", "--checkpoint", str(tmp_path / "none.npz"), "--resume"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_checkpoint_is_written_atomically(shapes, tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    trainer = Trainer(TrainConfig.for_model("book", epochs=1, batch_size=64), shapes)
    trainer.fit(max_steps=2)
    save_checkpoint(path, trainer)
    before = path.read_bytes()
    trainer.fit(max_steps=1)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nn_module.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, trainer)
    assert path.read_bytes() == before  # the old checkpoint survives
    assert os.listdir(tmp_path) == ["run.npz"]  # and no temporary file is left behind


def _tamper(path, out, edit):
    """Copy a checkpoint, passing its arrays through ``edit`` first."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    edit(arrays)
    np.savez(out, **arrays)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shapes):
    path = tmp_path_factory.mktemp("ckpt") / "good.npz"
    trainer = Trainer(TrainConfig.for_model("book", epochs=1), shapes)
    trainer.fit(max_steps=3)
    save_checkpoint(path, trainer)
    return path


def _state_edit(key, value):
    def edit(arrays):
        state = json.loads(str(arrays["state"]))
        state[key] = value
        arrays["state"] = np.array(json.dumps(state))
    return edit


BAD = {
    "truncated": (None, "not a valid npz file"),
    "garbage": (None, "not a valid npz file"),
    "model-file": (None, "not an npconv training checkpoint"),
    "bad-json": (lambda a: a.update(state=np.array("{not json")), "is corrupt"),
    "no-rng": (lambda a: a.update(state=np.array(json.dumps({"epoch": 0}))), "lacks"),
    "bad-rng": (_state_edit("shuffle_rng", {"bit_generator": "PCG64"}), "generator state"),
    "bad-position": (_state_edit("batch", 10_000), "impossible"),
    "wrong-shape": (lambda a: a.update({"model/0.weight": np.zeros((8, 1, 5, 5), np.float32)}),
                    r"0.weight has shape \[8, 1, 5, 5\]"),
    "missing-optim": (lambda a: a.pop("optim/0.weight.exp_avg"),
                      r"'0.weight' lacks \['exp_avg'\]"),
    "version": (lambda a: a.update(version=np.array(99)), "version 99"),
    "config": (lambda a: a.update(config=np.array('{"model": "resnet"}')), "unknown model"),
}


@pytest.mark.parametrize("case", BAD, ids=str)
def test_corrupt_checkpoint_is_refused(checkpoint, shapes, tmp_path, case):
    edit, message = BAD[case]
    bad = tmp_path / f"{case}.npz"
    if case == "truncated":
        bad.write_bytes(checkpoint.read_bytes()[:-200])
    elif case == "garbage":
        bad.write_bytes(os.urandom(2000))
    elif case == "model-file":
        Trainer(TrainConfig.for_model("book", epochs=1), shapes).model.save(bad)
    else:
        _tamper(checkpoint, bad, edit)
    with pytest.raises(ValueError, match=message) as info:
        load_checkpoint(bad, dataset=shapes)
    assert str(bad) in str(info.value)


def test_checkpoint_needs_no_pickle(checkpoint):
    with zipfile.ZipFile(checkpoint) as z:
        names = z.namelist()
    assert "config.npy" in names and "model/0.weight.npy" in names
    with np.load(checkpoint, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        TrainConfig.for_model("book", optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        TrainConfig.for_model("lenet5", batch_size=0)
    with pytest.raises(ValueError, match="shapes data set is generated"):
        TrainConfig.for_model("book", data_dir="/tmp")
    config = TrainConfig.for_model("lenet5", dataset="fashion-mnist")
    assert (config.lr, config.lr_step, config.epochs) == (1e-3, 0, 10)
    assert TrainConfig.for_model("book").epochs == 10  # shapes: 10 epochs by default
    assert TrainConfig.from_json(config.to_json()) == config


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--resume" in out and "fashion-mnist" in out
