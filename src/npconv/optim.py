"""Optimisers (SGD with momentum/Nesterov/weight decay, Adam) and the step schedule.

Updates follow ``torch.optim`` exactly, in the parameters' dtype, in place::

    SGD    g = grad + wd * p
           b = g (first step), b = mu * b + (1 - dampening) * g (later)
           g = g + mu * b (Nesterov) or b;       p -= lr * g
    Adam   g = grad + wd * p;  t += 1
           m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
           p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

``StepLR`` multiplies the learning rate by ``gamma`` every ``step_size`` calls to
``step()``; the book steps it once per batch (0.01, x0.9 every 500 steps).

Optimisers and schedules have ``state_dict()`` / ``load_state_dict()`` of plain NumPy
arrays (keyed by parameter name), so a training checkpoint can resume them exactly.
"""

from __future__ import annotations

import math

import numpy as np

from .nn.kernels import adam_hyper, adam_update
from .nn.module import Parameter


def _named(params) -> list[tuple[str, Parameter]]:
    """``model.named_parameters()`` (or a list of (name, Parameter)) as a checked list."""
    named = list(params.named_parameters() if hasattr(params, "named_parameters") else params)
    for item in named:
        if (not isinstance(item, tuple) or len(item) != 2
                or not isinstance(item[1], Parameter)):
            raise TypeError("optimiser: expected a Module or (name, Parameter) pairs, got "
                            f"{item!r}")
    if not named:
        raise ValueError("optimiser got an empty parameter list")
    return named


def _check_hyper(name: str, value: float, low: float = 0.0, high: float = math.inf) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value < high:
        raise ValueError(f"invalid {name}: {value!r} (expected a number in [{low}, {high}))")
    return float(value)


class Optimizer:
    """Shared parts: the named parameters, ``lr`` and the state of each parameter."""

    _buffers: tuple[str, ...] = ()

    def __init__(self, params, lr: float):
        self.params = _named(params)
        self.lr = _check_hyper("learning rate", lr)
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name, _ in self.params}
        self.steps = 0

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    def _grads(self):
        """(name, data, grad) of every parameter that has a gradient."""
        for name, p in self.params:
            if p.grad is not None:
                if p.grad.shape != p.data.shape or p.grad.dtype != p.data.dtype:
                    raise ValueError(f"{name}: gradient {p.grad.shape} {p.grad.dtype} does "
                                     f"not match the parameter {p.data.shape} {p.data.dtype}")
                yield name, p.data, p.grad

    def step(self) -> None:
        self.steps += 1
        self._begin_step()
        for name, data, grad in self._grads():
            self._update(self.state[name], data, grad)

    def _begin_step(self) -> None:
        """What every parameter's update of this step shares (none by default)."""

    def _update(self, state, data, grad) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{"lr": ..., "steps": ..., "<param>.<buffer>": array}``."""
        out = {"lr": np.array(self.lr, dtype=np.float64),
               "steps": np.array(self.steps, dtype=np.int64)}
        for name, buffers in self.state.items():
            out.update((f"{name}.{key}", value.copy()) for key, value in buffers.items())
        return out

    def load_state_dict(self, state) -> None:
        """Restore a :meth:`state_dict`; raises ValueError on an unknown or misshapen entry."""
        shapes = {name: p.data for name, p in self.params}
        new_state: dict[str, dict[str, np.ndarray]] = {name: {} for name in shapes}
        for key, value in state.items():
            if key in ("lr", "steps"):
                continue
            name, _, buffer = key.rpartition(".")
            if name not in shapes or buffer not in self._buffers:
                raise ValueError(f"optimiser state has an unknown entry {key!r}")
            value = np.asarray(value)
            if value.shape != shapes[name].shape:
                raise ValueError(f"optimiser state {key!r} has shape {value.shape}, the "
                                 f"parameter has {shapes[name].shape}")
            new_state[name][buffer] = value.astype(shapes[name].dtype, copy=True)
        for name, buffers in new_state.items():
            if buffers and set(buffers) != set(self._buffers):
                missing = sorted(set(self._buffers) - set(buffers))
                raise ValueError(f"optimiser state of {name!r} lacks {missing}")
        if "lr" not in state or "steps" not in state:
            raise ValueError("optimiser state lacks 'lr' or 'steps'")
        self.lr, self.steps, self.state = float(state["lr"]), int(state["steps"]), new_state


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    Parameters
    ----------
    params : Module or list of (name, Parameter)
    lr, momentum, dampening, weight_decay : float
    nesterov : bool
        Needs ``momentum > 0`` and ``dampening == 0``, as in PyTorch.
    """

    _buffers = ("momentum_buffer",)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        self.momentum = _check_hyper("momentum", momentum)
        self.dampening = _check_hyper("dampening", dampening)
        self.weight_decay = _check_hyper("weight_decay", weight_decay)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.nesterov = bool(nesterov)

    def _update(self, state, data, grad) -> None:
        dtype = data.dtype.type
        g = grad + dtype(self.weight_decay) * data if self.weight_decay else grad
        if self.momentum:
            mu = dtype(self.momentum)
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=data.dtype, copy=True)
            else:
                buf *= mu
                buf += dtype(1 - self.dampening) * g
            g = g + mu * buf if self.nesterov else buf
        data -= dtype(self.lr) * g


class Adam(Optimizer):
    """Adam (Kingma and Ba) with PyTorch's bias correction and L2 weight decay.

    Parameters
    ----------
    params : Module or list of (name, Parameter)
    lr : float
    betas : (float, float)
    eps, weight_decay : float
    """

    _buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.betas = (_check_hyper("beta1", betas[0], 0.0, 1.0),
                      _check_hyper("beta2", betas[1], 0.0, 1.0))
        self.eps = _check_hyper("eps", eps)
        self.weight_decay = _check_hyper("weight_decay", weight_decay)

    def _begin_step(self) -> None:
        b1, b2 = self.betas
        t = self.steps
        self._step_size, self._bias2_sqrt = self.lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t)
        self._hyper = {}  # dtype -> this step's scalars for the fused kernel, shape (8,)

    def _update(self, state, data, grad) -> None:
        b1, b2 = self.betas
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(data)
            state["exp_avg_sq"] = np.zeros_like(data)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        step_size, bias2_sqrt = self._step_size, self._bias2_sqrt
        if (data.flags.c_contiguous and grad.flags.c_contiguous and m.flags.c_contiguous
                and v.flags.c_contiguous):
            hyper = self._hyper.get(data.dtype)
            if hyper is None:
                hyper = self._hyper[data.dtype] = adam_hyper(
                    b1, b2, step_size, bias2_sqrt, self.eps, self.weight_decay, data.dtype)
            adam_update(data, grad, m, v, hyper)  # the lines below in one Numba pass
            return
        dtype = data.dtype.type
        g = grad + dtype(self.weight_decay) * data if self.weight_decay else grad
        m *= dtype(b1)
        m += dtype(1 - b1) * g
        v *= dtype(b2)
        v += dtype(1 - b2) * (g * g)
        denom = np.sqrt(v) / dtype(bias2_sqrt) + dtype(self.eps)
        data -= dtype(step_size) * (m / denom)


class StepLR:
    """``lr = base_lr * gamma ** (steps // step_size)``, updated on every :meth:`step`.

    The book's schedule is ``StepLR(opt, step_size=500, gamma=0.9)`` stepped per batch.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size!r}")
        self.optimizer = optimizer
        self.step_size = step_size
        self.gamma = _check_hyper("gamma", gamma)
        self.base_lr = optimizer.lr
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.steps // self.step_size)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"base_lr": np.array(self.base_lr, dtype=np.float64),
                "steps": np.array(self.steps, dtype=np.int64)}

    def load_state_dict(self, state) -> None:
        if set(state) != {"base_lr", "steps"}:
            raise ValueError(f"StepLR state must hold 'base_lr' and 'steps', got {sorted(state)}")
        self.base_lr, self.steps = float(state["base_lr"]), int(state["steps"])
        self.optimizer.lr = self.base_lr * self.gamma ** (self.steps // self.step_size)
