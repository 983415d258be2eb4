"""Parameters, the layer base class and ``Sequential``.

A layer keeps what its backward pass needs from the last forward pass; ``backward``
takes dL/d(output) and returns dL/d(input), writing the gradients of its parameters
into ``param.grad`` (overwritten, not accumulated: one forward, one backward).

Names follow PyTorch: a ``Sequential`` calls its children "0", "1", ... and a parameter
or buffer is ``"<child>.<name>"`` (``"0.weight"``, ``"4.running_mean"``), so
``state_dict()`` has the keys of the equivalent ``torch.nn.Sequential``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator

import numpy as np


class Parameter:
    """A trainable array and its gradient.

    Attributes
    ----------
    data : ndarray
        Updated in place by optimisers and ``load_state_dict`` (never rebound).
    grad : ndarray or None
        Same shape and dtype as ``data``; set by the owning layer's ``backward``.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        self.data = data
        self.grad = None

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers: parameters, buffers, children, train/eval mode."""

    def __init__(self):
        self.training = True
        self._parameters: dict[str, Parameter] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._children: dict[str, Module] = {}

    # ------------------------------------------------------------------ computation
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_output: np.ndarray, *, input_grad: bool = True):
        """dL/d(input) from dL/d(output); parameter gradients go to ``param.grad``.

        ``input_grad=False`` lets a layer skip dL/d(input) (the first layer of a
        network) and return None.
        """
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # ------------------------------------------------------------------ structure
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (name ``prefix``) and every descendant, depth first."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """``("0.weight", Parameter)`` ... in registration order."""
        for path, module in self.named_modules():
            for name, p in module._parameters.items():
                yield (f"{path}.{name}" if path else name), p

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for path, module in self.named_modules():
            for name, b in module._buffers.items():
                yield (f"{path}.{name}" if path else name), b

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        """Training mode (batch statistics, dropout on) or, with ``mode=False``, eval mode."""
        for _, module in self.named_modules():
            module.training = bool(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    @property
    def dtype(self) -> np.dtype | None:
        """The dtype of the first parameter (None for a module without parameters)."""
        first = next(self.named_parameters(), None)
        return None if first is None else first[1].data.dtype

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed as in ``torch.nn.Sequential``.

        ``{k: torch.from_numpy(v) for k, v in model.state_dict().items()}`` loads into
        the equivalent PyTorch model.
        """
        state = {}
        for path, module in self.named_modules():  # per module: parameters, then buffers
            prefix = f"{path}." if path else ""
            state.update((prefix + k, p.data.copy()) for k, p in module._parameters.items())
            state.update((prefix + k, b.copy()) for k, b in module._buffers.items())
        return state

    def load_state_dict(self, state, strict: bool = True) -> None:
        """Copy arrays (or PyTorch CPU tensors) into the parameters and buffers, in place.

        Raises
        ------
        ValueError
            On a missing or unexpected key (when ``strict``) or a shape mismatch; nothing
            is changed then.
        """
        targets = {name: p.data for name, p in self.named_parameters()}
        targets.update(self.named_buffers())
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys "
                             f"{unexpected}")
        converted = {}
        for name, target in targets.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(f"load_state_dict: {name} has shape {list(value.shape)}, the "
                                 f"model expects {list(target.shape)}")
            if value.dtype.kind not in "fiub" or (target.dtype.kind == "i"
                                                  and value.dtype.kind == "f"):
                raise ValueError(f"load_state_dict: {name} has dtype {value.dtype}, the model "
                                 f"expects {target.dtype}")
            converted[name] = value
        for name, value in converted.items():
            targets[name][...] = value  # casts to the model's dtype

    def save(self, path) -> None:
        """Write ``state_dict()`` to an ``.npz`` file (readable with ``allow_pickle=False``)."""
        atomic_savez(path, self.state_dict())

    def load(self, path) -> Module:
        """Load an ``.npz`` written by :meth:`save` (or from a PyTorch state_dict)."""
        self.load_state_dict(read_npz(path, "model file"))
        return self

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): {child!r}".replace("\n", "\n  ")
                 for name, child in self._children.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers applied in order; children named "0", "1", ... as in PyTorch."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, "
                                f"not a Module")
            self._children[str(i)] = layer

    def __len__(self) -> int:
        return len(self._children)

    def __getitem__(self, i: int) -> Module:
        return list(self._children.values())[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._children.values())

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self._children.values():
            x = layer.forward(x)
        return x

    def backward(self, grad_output: np.ndarray, *, input_grad: bool = True):
        layers = list(self._children.values())
        g = grad_output
        for i in range(len(layers) - 1, -1, -1):
            g = layers[i].backward(g, input_grad=input_grad or i > 0)
        return g


# ---------------------------------------------------------------------- npz files
def atomic_savez(path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary file in the same folder, then rename over ``path``.

    A crash while saving leaves the previous file (or none), never a broken one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_npz(path, what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read with ``allow_pickle=False``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file, if it is not a readable npz (truncated, corrupt, pickled objects).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an npz archive")
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{what} {path!r} is not a valid npz file: {exc}") from exc
