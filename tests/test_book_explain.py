"""``npconv explain``: the book's tables 14.5.1-14.5.5 and the 17.3 drawings, for any layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

import npconv
from npconv.algorithms import transpose
from npconv.book import explain
from npconv.book.explain import draw_dz
from npconv.cli import main
from npconv.padding import pad


def shapes(steps: dict) -> dict:
    return {name: tuple(step["shape"]) for name, step in steps.items()}


def test_the_books_tables_14_5():
    """BOOK-NOTES: X' (3,8,7,6), dZ' (2,8,4,2), dW' (3,2,4,5), dZ padded (8,2,10,10),
    W' (3,2,4,5)."""
    report = explain()  # the book's X (8, 3, 7, 6), W (2, 3, 4, 5), stride 1, padding 0
    assert shapes(report["tensors"]) == {
        "X": (8, 3, 7, 6), "W": (2, 3, 4, 5), "B": (2,), "Z": (8, 2, 4, 2),
        "dZ": (8, 2, 4, 2), "dW": (2, 3, 4, 5), "dB": (2,), "dX": (8, 3, 7, 6)}
    assert shapes(report["transpose_dw"]["steps"]) == {
        "X'": (3, 8, 7, 6), "dZ'": (2, 8, 4, 2), "dW'": (3, 2, 4, 5), "dW": (2, 3, 4, 5)}
    assert shapes(report["transpose_dx"]["steps"]) == {
        "dZ": (8, 2, 4, 2), "dZ padded": (8, 2, 10, 10), "W'": (3, 2, 4, 5),
        "dX": (8, 3, 7, 6)}
    assert report["transpose_dx"]["padding"] == [3, 3, 4, 4]  # formula 14.5.1: 3 rows, 4 cols
    pad_h, pad_w = report["padding_14_5_1"]["H"], report["padding_14_5_1"]["W"]
    assert pad_h["formula"] == "((7 - 1)*1 - 4 + 4) / 2 = 6/2"
    assert pad_w["formula"] == "((6 - 1)*1 - 2 + 5) / 2 = 8/2"
    assert pad_h["book_correct"] and pad_w["book_correct"]
    assert not report["zero_insertion"]["applies"]
    assert report["rot180"] == {"kernel": np.arange(1, 21).reshape(4, 5).tolist(),
                                "rotated": np.arange(20, 0, -1).reshape(4, 5).tolist()}
    assert report["im2col"]["cols"] == [60, 64]
    assert [g["c"][1] for g in report["im2col"]["gemms"]] == [[2, 64], [2, 60], [60, 64]]
    assert report["im2col"]["memory"]["cols_bytes"] == 60 * 64 * 4
    assert report["flops"]["forward"] == 2 * 8 * 2 * 4 * 2 * 3 * 4 * 5 == 15360


def test_strided_padded_grouped_layer():
    report = explain((2, 4, 9, 8), (6, 2, 3, 2), stride=2, padding=1, groups=2)
    assert report["layer"]["y"] == [2, 6, 5, 5]
    assert shapes(report["transpose_dw"]["steps"]) == {
        "X padded": (2, 4, 11, 10), "X'": (4, 2, 11, 10), "dZ'": (6, 2, 5, 5),
        "dW'": (2, 3, 3, 2), "dW": (6, 2, 3, 2)}
    assert shapes(report["transpose_dx"]["steps"]) == {
        "dZ": (2, 6, 5, 5), "dZ zero-inserted": (2, 6, 9, 9), "dZ padded": (2, 6, 13, 11),
        "W'": (4, 3, 3, 2), "dX padded": (2, 4, 11, 10), "dX": (2, 4, 9, 8)}
    assert report["im2col"]["gemms"][0]["a"] == ["W[g]", [3, 12]]
    assert report["im2col"]["gemms"][0]["count"] == 2
    assert report["zero_insertion"]["applies"]


def test_stride_remainder_makes_the_padding_asymmetric():
    report = explain((1, 1, 10, 9), (1, 1, 3, 3), stride=2)
    pad_h = report["padding_14_5_1"]["H"]
    assert (pad_h["before"], pad_h["after"], pad_h["remainder"]) == (2, 3, 1)
    assert pad_h["asymmetric"] and not pad_h["book_correct"]
    assert "dW' cropped" in report["transpose_dw"]["steps"]  # row 10 met no kernel tap


def test_zero_insertion_is_drawn_as_in_17_3_2():
    assert draw_dz(2, 3, (2, 2))["grid"] == [["δ11", "0", "δ12", "0", "δ13"],
                                             ["0", "0", "0", "0", "0"],
                                             ["δ21", "0", "δ22", "0", "δ23"]]
    assert draw_dz(2, 3, (3, 3))["shape"] == [4, 7]
    padded = draw_dz(1, 1, (1, 1), (1, 0, 0, 2))
    assert padded["grid"] == [["·", "·", "·"], ["δ11", "·", "·"]]
    assert draw_dz(30, 30)["cropped"]


LAYERS = [
    ("book", (8, 3, 7, 6), (2, 3, 4, 5), {}),
    ("stride-pad-groups", (2, 4, 9, 8), (6, 2, 3, 2), dict(stride=2, padding=1, groups=2)),
    ("remainder-dilation", (2, 2, 11, 10), (3, 2, 3, 2), dict(stride=(2, 3), dilation=(1, 2))),
    ("same-even", (1, 2, 6, 5), (2, 2, 4, 2), dict(padding="same")),
    ("asymmetric-depthwise", (2, 3, 7, 6), (3, 1, 3, 3),
     dict(padding=((0, 2), (3, 1)), groups=3, stride=2)),
]


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [layer[1:] for layer in LAYERS],
                         ids=[layer[0] for layer in LAYERS])
def test_explained_steps_are_the_arrays_the_transpose_method_builds(x_shape, w_shape, kwargs):
    """Follow the explained steps with real arrays: same shapes, and they give dW and dX."""
    report = explain(x_shape, w_shape, **kwargs)
    layer = report["layer"]
    (sh, sw), (dh, dw), g = layer["stride"], layer["dilation"], layer["groups"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    dz = rng.standard_normal(layer["y"])

    dw_steps = report["transpose_dw"]["steps"]
    xp = pad(x, tuple(layer["padding"]), "zeros")
    x_t, dz_t = xp.transpose(1, 0, 2, 3), dz.transpose(1, 0, 2, 3)
    assert x_t.shape == tuple(dw_steps["X'"]["shape"])
    assert dz_t.shape == tuple(dw_steps["dZ'"]["shape"])
    cig, cog = w_shape[1], w_shape[0] // g
    dw_t = transpose._conv4d(x_t[:cig], dz_t[:cog], stride=(dh, dw), dilation=(sh, sw))
    assert dw_t.shape == tuple(dw_steps["dW'"]["shape"])
    np.testing.assert_allclose(
        dw_t[:, :, :w_shape[2], :w_shape[3]].transpose(1, 0, 2, 3),
        npconv.grad.conv2d_weight(x, w_shape, dz, algorithm="naive", **kwargs)[:cog])

    dx_steps = report["transpose_dx"]["steps"]
    inserted = transpose.zero_insert(dz, (sh, sw))
    if "dZ zero-inserted" in dx_steps:
        assert inserted.shape == tuple(dx_steps["dZ zero-inserted"]["shape"])
    dz_padded = pad(inserted, tuple(report["transpose_dx"]["padding"]), "zeros")
    assert dz_padded.shape == tuple(dx_steps["dZ padded"]["shape"])
    w_t = transpose.transposed_kernel(w, g)
    assert w_t.shape == tuple(dx_steps["W'"]["shape"])
    dx_padded = transpose._conv4d(dz_padded, w_t, (1, 1), (dh, dw), g)
    assert dx_padded.shape == tuple(dx_steps.get("dX padded", dx_steps["dX"])["shape"])
    top, _, left, _ = layer["padding"]
    dx = dx_padded[:, :, top:top + x_shape[2], left:left + x_shape[3]]
    assert dx.shape == tuple(dx_steps["dX"]["shape"]) == x_shape
    np.testing.assert_allclose(
        dx, npconv.grad.conv2d_input(x_shape, w, dz, algorithm="naive", **kwargs))


def test_padding_modes_are_explained():
    report = explain((1, 2, 5, 6), (3, 2, 3, 3), padding=(2, 1), padding_mode="reflect")
    steps = report["transpose_dx"]["steps"]
    assert steps["dX padded"]["shape"] == [1, 2, 9, 8]
    assert "reflect" in steps["dX"]["what"]
    assert report["transpose_dw"]["steps"]["X padded"]["shape"] == [1, 2, 9, 8]


def test_report_is_json():
    report = explain((2, 3, 9, 9), (4, 3, 3, 3), stride=2, padding="same", dtype="float64")
    assert json.loads(json.dumps(report)) == report
    assert report["im2col"]["memory"]["dtype"] == "float64"


def test_invalid_layers_raise_value_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        explain(groups=3)
    with pytest.raises(ValueError, match="Kernel size can't be greater"):
        explain((1, 1, 3, 3), (1, 1, 5, 5))
    with pytest.raises(ValueError, match="dtype"):
        explain(dtype="int8")


def test_cli_prints_the_tables(capsys):
    assert main(["explain"]) == 0
    out = capsys.readouterr().out
    for text in ("(3, 8, 7, 6)", "(8, 2, 10, 10)", "20 19 18 17 16", "formula 14.5.1",
                 "cols (60, 64)", "FLOPs forward"):
        assert text in out
    assert main(["explain", "--x", "1,1,10,9", "--weight", "1,1,3,3", "--stride", "2"]) == 0
    out = capsys.readouterr().out
    assert "asymmetric" in out and "δ11   0 δ12" in out


def test_cli_json(capsys):
    assert main(["explain", "--json", "--stride", "2,1", "--padding", "0,1,2,0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layer"]["padding"] == [0, 1, 2, 0]
    assert report["layer"]["stride"] == [2, 1]


def test_cli_errors_are_one_line(capsys):
    assert main(["explain", "--groups", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npconv explain: error:") and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--x", "1,2,3"])
    assert exc.value.code == 2
    assert "4 positive integers" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["explain", "fit-kernel", "check"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out
