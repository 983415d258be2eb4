"""``npconv bench`` runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from npconv.cli import main


def test_bench_suite_writes_json_and_plot(tmp_path, torch):
    out, png = tmp_path / "suite.json", tmp_path / "suite.png"
    assert main(["bench", "suite", "--layers", "book,lenet2", "--repeat", "1",
                 "--json", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    assert [r["id"] for r in result["rows"]] == ["book", "lenet2"]
    for row in result["rows"]:
        assert row["max_abs_err"] < 1e-3 and row["ms"] > 0 and "speedup" in row
        # % of the sgemm peak measured taking turns with the row's own layer
        assert row["sgemm_gflops"] > 0
        assert row["peak_pct"] == pytest.approx(100 * row["gflops"] / row["sgemm_gflops"])
    peaks = sorted(r["sgemm_gflops"] for r in result["rows"])
    assert result["sgemm_peak_gflops"] == pytest.approx((peaks[0] + peaks[1]) / 2)  # median
    assert "oneDNN" in result["torch"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bench_book_runs_every_method(tmp_path, torch):
    out = tmp_path / "book.json"
    assert main(["bench", "book", "--iterations", "3", "--json", str(out)]) == 0
    seconds = json.loads(out.read_text())["seconds"]
    assert set(seconds) == {"torch", "naive", "transpose", "im2col", "jit", "auto"}
    assert all(np.isfinite(v) and v > 0 for v in seconds.values())


def test_bench_rejects_unknown_layer(capsys):
    assert main(["bench", "suite", "--layers", "nope"]) == 2
    assert "no layer of the suite matches 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["suite", "passes"])
def test_bench_autotune_reports_the_measured_choice(tmp_path, torch, which):
    from npconv import tuning

    out = tmp_path / f"{which}.json"
    assert main(["bench", which, "--layers", "book", "--repeat", "1", "--autotune",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["autotune"] is True
    for row in result["rows"]:
        assert all(a in tuning.CANDIDATES for a in row["algorithm"].split("/"))
    assert not tuning.autotune_enabled()  # switched back off afterwards


@pytest.mark.parametrize("level", ["highest", "high"])
def test_bench_suite_runs_at_the_float32_precision_asked_for(tmp_path, torch, capsys, level,
                                                             avx2_rule):
    # (AVX2's rule: with AVX-512 float32 winograd runs F(4x4, 3x3) only, not "highest")
    import npconv

    out = tmp_path / "suite.json"
    assert main(["bench", "suite", "--layers", "res28", "--repeat", "1",
                 "--float32-precision", level, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert result["float32_precision"] == level and row["algorithm"] == "winograd"
    # dW sums 12,544 products per weight (values near 300): float32 sums of that length
    # are off by 1e-3 to 1e-2 on any algorithm (F(2x2)'s too); a wrong answer by ~100
    assert row["max_abs_err"] < 0.05
    printed = capsys.readouterr().out
    assert f"float32 precision {level}" in printed
    assert ("1/4 (F(4x4, 3x3)" in printed) == (level == "high")
    assert npconv.get_float32_precision() == "high"  # set back afterwards


def test_bench_passes_times_each_pass_and_draws_the_grid(tmp_path, torch):
    out, png = tmp_path / "passes.json", tmp_path / "passes.png"
    assert main(["bench", "passes", "--layers", "book,down", "--repeat", "1",
                 "--json", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    parts = ("forward", "grad_input", "grad_weight", "grad_bias")
    assert [(r["id"], r["part"]) for r in result["rows"]] == [
        (layer, part) for layer in ("book", "down") for part in parts]
    for r in result["rows"]:
        assert r["ms"] > 0 and r["torch_ms"] > 0 and r["speedup"] > 0
    for layer in ("book", "down"):
        shares = [r["share"] for r in result["rows"] if r["id"] == layer]
        assert abs(sum(shares) - 1) < 1e-9
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_torch_side_passes_compute_each_gradient_alone(torch):
    """The PyTorch side of ``bench passes`` asks convolution_backward for one gradient
    at a time; each must be that gradient (the mask in the right order)."""
    import npconv
    from npconv._torch_side import _part

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kwargs = dict(stride=2, padding=1, dilation=1, groups=2)
    y = npconv.conv2d(x, w, b, **kwargs)
    g = rng.standard_normal(y.shape).astype(np.float32)
    expected = [y, *npconv.conv2d_backward(x, w, g, **kwargs)]
    for i, part in enumerate(("forward", "grad_input", "grad_weight", "grad_bias")):
        got = _part(torch, part, x, w, b, g, kwargs)
        got = got if part == "forward" else got[i - 1]
        np.testing.assert_allclose(got.numpy(), expected[i], rtol=1e-4, atol=1e-4,
                                   err_msg=part)


def test_the_passes_grid_without_torch_shows_each_pass_share(tmp_path):
    from npconv.bench import PASSES, save_passes_plot

    rows = [dict(id=layer, part=part, algorithm="jit", ms=1.0 + i, share=(1.0 + i) / 10)
            for layer in ("a", "b") for i, part in enumerate(PASSES)]
    png = tmp_path / "grid.png"
    save_passes_plot(dict(rows=rows, dtype="float32", threads=2), str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"



def test_layers_are_chosen_by_id_or_by_set():
    from npconv.bench import MORE, SUITE, select_layers
    from npconv.spec import plan_conv2d

    assert select_layers(None) == SUITE and select_layers("more") == MORE
    assert select_layers("all") == SUITE + MORE
    assert [layer.id for layer in select_layers("down,dw_s2,down")] == ["down", "dw_s2"]
    with pytest.raises(ValueError, match="no layer of the suite matches 'nope'"):
        select_layers("book,nope")
    for layer in MORE:  # every layer of other networks is a valid convolution
        plan_conv2d(layer.x, layer.weight, **layer.kwargs)
