"""Optimisers and the step schedule against torch.optim, step by step."""

from __future__ import annotations

import numpy as np
import pytest

from npconv import optim
from npconv.nn import Parameter

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 2e-6}


def _problem(dtype, seed=0):
    """Two parameters and a fixed sequence of gradients."""
    rng = np.random.default_rng(seed)
    params = [("a.weight", rng.standard_normal((3, 4)).astype(dtype)),
              ("a.bias", rng.standard_normal(3).astype(dtype))]
    grads = [[rng.standard_normal(p.shape).astype(dtype) for _, p in params] for _ in range(6)]
    return params, grads


def _run_both(torch, make_ours, make_theirs, dtype):
    params, grads = _problem(dtype)
    ours = [(name, Parameter(p.copy())) for name, p in params]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for _, p in params]
    opt, topt = make_ours(ours), make_theirs(theirs)
    for step_grads in grads:
        for (_, p), tp, g in zip(ours, theirs, step_grads, strict=True):
            p.grad = g.copy()
            tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
    for (name, p), tp in zip(ours, theirs, strict=True):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=TOL[dtype],
                                   atol=TOL[dtype], err_msg=name)
    return opt


SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov-decay": dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
    "dampening": dict(lr=0.1, momentum=0.5, dampening=0.3),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", SGD_CASES, ids=str)
def test_sgd_matches_torch(torch, case, dtype):
    kw = SGD_CASES[case]
    _run_both(torch, lambda p: optim.SGD(p, **kw), lambda p: torch.optim.SGD(p, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kw", [dict(lr=1e-2), dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6,
                                                     weight_decay=0.1)], ids=["default", "custom"])
def test_adam_matches_torch(torch, kw, dtype):
    _run_both(torch, lambda p: optim.Adam(p, **kw),
              lambda p: torch.optim.Adam(p, **kw, foreach=False), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_adam_on_non_contiguous_parameters(dtype):
    """The fused kernel needs contiguous arrays; other layouts take the NumPy path, and
    both keep the parameters' dtype (float32 stays float32)."""
    params, grads = _problem(dtype)
    big = np.zeros((3, 8), dtype=dtype)
    big[:, ::2] = params[0][1]
    strided = [("w", Parameter(big[:, ::2]))]
    plain = [("w", Parameter(params[0][1].copy()))]
    opts = [optim.Adam(p, lr=1e-2, weight_decay=0.1) for p in (strided, plain)]
    for step_grads in grads:
        for p, opt in zip((strided, plain), opts, strict=True):
            p[0][1].grad = step_grads[0]
            opt.step()
    assert not strided[0][1].data.flags.c_contiguous
    np.testing.assert_allclose(big[:, ::2], plain[0][1].data, rtol=TOL[dtype] / 2)
    for opt in opts:
        assert all(buf.dtype == dtype for buf in opt.state["w"].values())
    assert plain[0][1].data.dtype == dtype


def test_step_lr_matches_torch(torch):
    params = [("w", Parameter(np.zeros(2)))]
    opt = optim.SGD(params, lr=0.01)
    schedule = optim.StepLR(opt, step_size=500, gamma=0.9)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.01)
    tschedule = torch.optim.lr_scheduler.StepLR(topt, step_size=500, gamma=0.9)
    for step in range(1, 2001):
        schedule.step()
        topt.step()
        tschedule.step()
        if step in (499, 500, 1000, 1999, 2000):
            assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12), step
    assert opt.lr == pytest.approx(0.01 * 0.9**4)


def test_state_dict_resumes_exactly():
    params, grads = _problem(np.float32)
    a = [(n, Parameter(p.copy())) for n, p in params]
    b = [(n, Parameter(p.copy())) for n, p in params]
    opt_a = optim.Adam(a, lr=1e-2)
    sched_a = optim.StepLR(opt_a, 2, 0.5)
    for i, step_grads in enumerate(grads):
        for (_, p), g in zip(a, step_grads, strict=True):
            p.grad = g
        opt_a.step()
        sched_a.step()
        if i == 2:  # hand the state over to a fresh optimiser at step 3
            opt_b = optim.Adam(b, lr=1e-2)
            sched_b = optim.StepLR(opt_b, 2, 0.5)
            for (_, pb), (_, pa) in zip(b, a, strict=True):
                pb.data[...] = pa.data
            opt_b.load_state_dict(opt_a.state_dict())
            sched_b.load_state_dict(sched_a.state_dict())
        elif i > 2:
            for (_, p), g in zip(b, step_grads, strict=True):
                p.grad = g
            opt_b.step()
            sched_b.step()
    for (_, pa), (_, pb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa.data, pb.data)
    assert opt_a.lr == opt_b.lr and opt_a.steps == opt_b.steps == 6


def test_optimizer_errors():
    p = [("w", Parameter(np.zeros(3)))]
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta1"):
        optim.Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(TypeError, match="Parameter"):
        optim.Adam([np.zeros(3)])
    opt = optim.Adam(p)
    p[0][1].grad = np.zeros(4)
    with pytest.raises(ValueError, match=r"gradient \(4,\)"):
        opt.step()
    with pytest.raises(ValueError, match=r"unknown entry 'v\.exp_avg'"):
        opt.load_state_dict({"lr": 1e-3, "steps": 1, "v.exp_avg": np.zeros(3)})
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, 0)
