"""``npconv check``: passes on the library as it is, fails when an algorithm is broken."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

import npconv
from npconv.book import GRID, Case, check, exit_status, summarize
from npconv.book.check import skipped
from npconv.cli import main

SMALL = [case for case in GRID if case.id in ("book", "stride-remainder", "transposed")]


def test_the_whole_grid_passes(capsys):
    """Every algorithm, case, dtype and reference: what a learner runs; exit status 0."""
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "PASS: all" in out and "FAIL" not in out
    for algorithm in npconv.ALGORITHMS:
        assert algorithm in out


def test_rows_and_summary():
    rows = check(("im2col", "naive"), cases=SMALL, torch=False)
    assert rows and exit_status(rows) == 0
    assert {r.reference for r in rows} == {"naive", "finite-diff"}
    assert {r.case for r in rows} == {"book", "stride-remainder", "transposed"}
    assert {r.op for r in rows} == {"conv2d", "conv_transpose2d"}
    assert not any(r.algorithm == r.reference == "naive" and r.dtype == "float64" for r in rows)
    assert {r.dtype for r in rows if r.reference == "finite-diff"} == {"float64"}
    summary = summarize(rows)
    assert [(s["algorithm"], s["reference"], s["dtype"]) for s in summary][:3] == [
        ("naive", "naive", "float32"), ("naive", "finite-diff", "float64"),
        ("im2col", "naive", "float32")]
    assert all(s["passed"] for s in summary)


def test_winograd_is_checked_on_the_cases_it_can_run(capsys):
    cases = [case for case in GRID if case.id in ("book", "dilation", "padding-1")]
    assert skipped(("jit", "winograd"), cases) == {"winograd": ["book"]}  # a 4x5 kernel
    rows = check(("winograd",), cases=cases, torch=False)
    assert rows and exit_status(rows) == 0
    assert {r.case for r in rows} == {"dilation", "padding-1"}
    assert {r.reference for r in rows} == {"naive", "finite-diff"}
    assert main(["check", "--algorithm", "winograd", "--cases", "book,dilation", "--no-torch",
                 "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "winograd cannot run 1 of the cases (left out for it): book" in out
    assert "PASS: all" in out
    with pytest.raises(ValueError, match="nothing to check: winograd cannot run any"):
        check(("winograd",), cases=cases[:1], torch=False)
    assert main(["check", "--algorithm", "winograd", "--cases", "book", "--no-torch"]) != 0
    assert "nothing to check" in capsys.readouterr().err


def test_torch_is_a_reference_when_installed(torch):
    rows = check(("jit",), ("float64",), SMALL[:1], torch=True, finite_differences=False)
    assert {r.reference for r in rows} == {"naive", "torch"}
    assert all(r.passed and r.max_rel < 1e-12 for r in rows)


def test_forgetting_rot180_is_caught(monkeypatch, capsys):
    """A learner's classic bug in the transpose method: W' transposed but not rotated."""
    transpose = importlib.import_module("npconv.algorithms.transpose")
    rotated = transpose.transposed_kernel
    monkeypatch.setattr(transpose, "transposed_kernel",
                        lambda weight, groups: rotated(weight, groups)[:, :, ::-1, ::-1])
    assert main(["check", "--cases", "book,transposed", "--no-torch"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    rows = check(cases=SMALL, torch=False)
    failed = {(r.algorithm, r.op, r.quantity) for r in rows if not r.passed}
    assert {a for a, _, _ in failed} == {"transpose"}  # the other algorithms still pass
    assert ("transpose", "conv2d", "dX") in failed  # dX of conv2d ...
    assert ("transpose", "conv_transpose2d", "y") in failed  # ... is conv_transpose2d's y
    assert not any(q == "dW" and op == "conv2d" for _, op, q in failed)


def test_a_wrong_weight_gradient_is_caught_by_every_reference(monkeypatch):
    im2col = importlib.import_module("npconv.algorithms.im2col")
    backward = im2col.backward

    def off_by_a_bit(*args):
        dx, dw = backward(*args)
        return dx, None if dw is None else dw * 1.001

    monkeypatch.setattr(im2col, "backward", off_by_a_bit)
    rows = check(("im2col", "jit"), cases=SMALL[:2])
    failed = {(r.algorithm, r.reference, r.quantity) for r in rows if not r.passed}
    references = {"naive", "finite-diff"} | ({"torch"} if any(
        r.reference == "torch" for r in rows) else set())
    assert failed == {("im2col", ref, "dW") for ref in references}


def test_exceptions_and_wrong_dtypes_fail_without_stopping_the_check(monkeypatch):
    jit = importlib.import_module("npconv.algorithms.jit")

    def broken(*args):
        raise IndexError("index 7 is out of bounds")

    monkeypatch.setattr(jit, "grad_weight", broken)
    monkeypatch.setattr(jit, "backward", broken, raising=False)
    monkeypatch.setattr(jit, "bind_backward", lambda spec, dtype: broken)
    transpose = importlib.import_module("npconv.algorithms.transpose")
    forward = transpose.forward
    monkeypatch.setattr(transpose, "forward", lambda x, w, s: forward(x, w, s).astype(np.float64))
    rows = check(("jit", "transpose"), cases=SMALL[:1], torch=False)
    jit_rows = [r for r in rows if r.algorithm == "jit"]
    assert jit_rows and not any(r.passed for r in jit_rows)
    assert "IndexError: index 7 is out of bounds" in jit_rows[0].note
    dtype_rows = [r for r in rows if r.algorithm == "transpose" and not r.passed]
    assert {(r.dtype, r.quantity) for r in dtype_rows} == {("float32", "y")}
    assert "dtype float64, expected float32" in dtype_rows[0].note
    assert exit_status(rows) == 1


def test_a_given_layer(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["check", "--x", "2,3,11,9", "--weight", "4,3,3,3", "--stride", "2",
                 "--padding", "same", "--padding-mode", "replicate", "--no-grid",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["case"] for r in rows} == {"given"} and all(r["passed"] for r in rows)
    assert main(["check", "--x", "2,4,5,5", "--weight", "4,2,3,3", "--transposed",
                 "--stride", "2", "--output-padding", "1", "--no-grid", "--no-fd",
                 "--dtype", "float64", "--algorithm", "im2col"]) == 0
    assert "1 algorithm(s) x 1 case(s)" in capsys.readouterr().out


def test_bad_options(capsys):
    assert main(["check", "--x", "1,2,3,3"]) == 2
    assert main(["check", "--cases", "nope"]) == 2
    assert main(["check", "--x", "1,2,3,3", "--weight", "2,2,5,5", "--no-grid"]) == 2
    err = capsys.readouterr().err
    assert "give both --x and --weight" in err and "unknown case(s) nope" in err
    assert "Kernel size can't be greater" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["check", "--algorithm", "fft"])
    with pytest.raises(ValueError, match="unknown algorithm"):
        check(("fft",))
    with pytest.raises(ValueError, match="case 'bad'"):
        check(cases=[Case("bad", (1, 3, 5, 5), (2, 2, 3, 3))])
