"""Model files: npconv's state_dict loads into PyTorch and PyTorch's into npconv."""

from __future__ import annotations

import numpy as np
import pytest

import npconv.nn as nn


def torch_twin(torch, model):
    """An untrained torch.nn.Sequential with the layers of ``model`` (weights not copied)."""
    twins = {nn.Conv2d: lambda m: torch.nn.Conv2d(m.in_channels, m.out_channels,
                                                  m.kernel_size, m.stride, m.padding),
             nn.Linear: lambda m: torch.nn.Linear(m.in_features, m.out_features),
             nn.BatchNorm1d: lambda m: torch.nn.BatchNorm1d(m.num_features),
             nn.MaxPool2d: lambda m: torch.nn.MaxPool2d(m.kernel_size, m.stride, m.padding),
             nn.ReLU: lambda m: torch.nn.ReLU(), nn.Flatten: lambda m: torch.nn.Flatten()}
    return torch.nn.Sequential(*(twins[type(layer)](layer) for layer in model))


def _train_a_little(model, steps=3, seed=0):
    """A few Adam steps so that running statistics and weights are not the defaults."""
    from npconv.optim import Adam

    rng = np.random.default_rng(seed)
    opt, loss = Adam(model, lr=1e-2), nn.SoftmaxCrossEntropy()
    for _ in range(steps):
        x = rng.random((8, 1, 28, 28), dtype=np.float32)
        loss(model(x), rng.integers(0, 10, 8))
        model.backward(loss.backward(), input_grad=False)
        opt.step()


@pytest.mark.parametrize("name", ["book", "lenet5"])
def test_npconv_state_dict_loads_into_torch(torch, name, tmp_path):
    model = nn.build_model(name, seed=1)
    _train_a_little(model)
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as npz:
        state = {k: torch.from_numpy(npz[k]) for k in npz.files}
    twin = torch_twin(torch, model)
    twin.load_state_dict(state)  # strict: every key and shape matches
    if name == "book":
        assert int(twin[4].num_batches_tracked) == 3
    x = np.random.default_rng(5).random((6, 1, 28, 28), dtype=np.float32)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        getattr(twin, mode)()
        with torch.no_grad():
            expected = twin(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-5, err_msg=mode)


@pytest.mark.parametrize("name", ["book", "lenet5"])
def test_torch_state_dict_loads_into_npconv(torch, name):
    torch.manual_seed(0)
    twin = torch_twin(torch, nn.build_model(name))
    twin.train()
    with torch.no_grad():  # move the BatchNorm running statistics off their defaults
        for _ in range(2):
            twin(torch.rand(8, 1, 28, 28))
    model = nn.build_model(name, seed=9)
    model.load_state_dict(twin.state_dict())
    x = np.random.default_rng(2).random((5, 1, 28, 28), dtype=np.float32)
    twin.eval()
    model.eval()
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-5)
    assert model.state_dict().keys() == twin.state_dict().keys()


def test_save_load_round_trip_is_exact(tmp_path):
    model = nn.build_model("book", seed=3)
    _train_a_little(model)
    model.save(tmp_path / "m.npz")
    other = nn.build_model("book", seed=4).load(tmp_path / "m.npz")
    for key, value in model.state_dict().items():
        got = other.state_dict()[key]
        assert got.dtype == value.dtype
        np.testing.assert_array_equal(got, value, err_msg=key)


def test_load_state_dict_errors(tmp_path):
    model = nn.build_model("book")
    state = model.state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['5.bias'\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "5.bias"})
    with pytest.raises(ValueError, match=r"0.weight has shape \[8, 1, 3, 3\].*\[8, 1, 5, 5\]"):
        model.load_state_dict({**state, "0.weight": np.zeros((8, 1, 3, 3), np.float32)})
    before = model.state_dict()["0.bias"].copy()
    with pytest.raises(ValueError):  # nothing is changed by a failed load
        model.load_state_dict({**state, "0.bias": before + 1, "5.weight": np.zeros(3)})
    np.testing.assert_array_equal(model.state_dict()["0.bias"], before)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(ValueError, match=r"model file .*broken.npz.* not a valid npz"):
        model.load(broken)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.load(tmp_path / "absent.npz")
