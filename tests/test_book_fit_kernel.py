"""``npconv fit-kernel``: the 17.3.7 experiment converges, and its checks mean something."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import npconv
from npconv.book import KERNELS, fit_kernel, make_source
from npconv.book.fit_kernel import parse_kernel
from npconv.book.images import area_matrix, load_image, resize, to_gray
from npconv.cli import main


def test_the_books_setting_converges():
    """Horizontal edge, lr 0.5, loss < 1e-7 (the book: iteration 3460 with its circle.png)."""
    result = fit_kernel()
    assert result.converged and result.passed
    assert 0 < result.iterations < 10000 and result.final_loss < 1e-7
    assert len(result.history) == result.iterations + 1
    assert np.all(np.diff(result.history) < 0)  # lr * max eigenvalue < 2: monotone descent
    np.testing.assert_allclose(result.w_result, KERNELS["horizontal-edge"], atol=1e-2)
    assert result.target.shape == result.output.shape == (78, 78)
    assert result.seconds < 20


@pytest.mark.parametrize("kernel", ["sobel-x", "laplacian", "box-blur"])
def test_classic_kernels_converge(kernel):
    result = fit_kernel(kernel, seed=1)
    assert result.passed, (kernel, result.iterations, result.final_loss)
    assert np.max(np.abs(result.w_result - np.array(KERNELS[kernel]))) < 1e-2


def test_the_output_check_uses_the_trained_kernel():
    """The book's bug: it compared the output of w_true with itself."""
    result = fit_kernel(max_iter=30)
    x = result.source[None, None]
    trained = npconv.conv2d(x, result.w_result[None, None])[0, 0]
    np.testing.assert_allclose(result.output, trained)
    assert not result.output_close and not result.kernel_close and not result.converged
    assert np.max(np.abs(result.output - result.target)) > 1e-2


def test_an_ill_conditioned_picture_does_not_reach_the_tolerance():
    """A smooth disc excites the sharpen kernel's directions too weakly (see images.py)."""
    result = fit_kernel("sharpen", source="soft-disc")
    assert not result.converged and result.iterations == 10000
    assert result.eigenvalues[0] < 0.002
    assert not result.passed


def test_too_large_a_learning_rate_diverges_quickly():
    result = fit_kernel(lr=4.0)
    assert result.diverged and not result.passed and result.iterations < 200
    assert 4.0 * result.eigenvalues[-1] >= 2


def test_stride_and_padding():
    result = fit_kernel("sobel-y", stride=2, padding=1)
    assert result.output.shape == (40, 40) and result.passed


def test_every_algorithm_takes_the_same_steps():
    small = make_source("shapes")[::4, ::4]  # 20x20 so that the naive loops stay quick
    results = [fit_kernel(image=small, max_iter=25, algorithm=a) for a in npconv.ALGORITHMS]
    for r in results[1:]:
        np.testing.assert_allclose(r.w_result, results[0].w_result, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(r.history, results[0].history, rtol=1e-10)


def test_parse_kernel():
    assert parse_kernel("sharpen")[0] == "sharpen"
    name, k = parse_kernel("0,-1,0; 0,2,0; 0,-1,0")
    assert name == "custom" and np.array_equal(k, KERNELS["horizontal-edge"])
    assert parse_kernel("[[1, 2], [3, 4]]")[1].shape == (2, 2)
    assert parse_kernel([[1, 0, -1]])[1].shape == (1, 3)
    for bad in ("blur", "1,2;3", "[[1, 2], [3]]", "nan,1;1,1", [[]]):
        with pytest.raises(ValueError):
            parse_kernel(bad)


def test_sources_are_deterministic_and_in_range():
    for name in ("shapes", "circle", "soft-disc"):
        a, b = make_source(name), make_source(name)
        assert a.shape == (80, 80) and np.array_equal(a, b)
        assert 0 <= a.min() and a.max() <= 1
    with pytest.raises(ValueError, match="unknown source"):
        make_source("square")


def test_resize_and_gray():
    np.testing.assert_allclose(area_matrix(160, 80).sum(axis=1), 1)
    image = np.arange(16.0).reshape(4, 4)
    np.testing.assert_allclose(resize(image, 2), [[2.5, 4.5], [10.5, 12.5]])  # block means
    assert resize(np.ones((30, 50)), 80).shape == (80, 80)
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = 255
    np.testing.assert_allclose(to_gray(rgb)[0, 0], 1.0)


def test_image_file(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    big = np.kron(make_source("circle"), np.ones((2, 2)))[20:140]  # (120, 160)
    picture = np.stack([big, 0.5 * big, 0 * big], axis=-1)  # an RGB picture, not square
    path = tmp_path / "circle.png"
    plt.imsave(path, picture)
    gray = load_image(path)
    assert gray.shape == (80, 80) and 0 <= gray.min() and gray.max() <= 1
    result = fit_kernel(image=str(path), lr=1.0)
    assert result.settings["image"] == str(path) and result.iterations > 0
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    (tmp_path / "not.png").write_text("no picture")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "not.png")


def test_cli_writes_figure_and_json_atomically(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png, out = tmp_path / "fit.png", tmp_path / "fit.json"
    assert main(["fit-kernel", "--kernel", "vertical-edge", "--out", str(png),
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stopped at iteration" in text and "w allclose(atol=0.01): True" in text
    assert png.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(out.read_text())
    assert summary["passed"] and len(summary["history"]) == summary["iterations"] + 1
    assert sorted(os.listdir(tmp_path)) == ["fit.json", "fit.png"]  # no temporary left
    mask = os.umask(0)
    os.umask(mask)
    assert png.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_cli_exit_status_and_errors(capsys):
    assert main(["fit-kernel", "--max-iter", "5"]) == 1  # not converged
    assert main(["fit-kernel", "--kernel", "blurr"]) == 2
    assert "unknown kernel 'blurr'" in capsys.readouterr().err
    assert main(["fit-kernel", "--image", "/no/such/picture.png"]) == 2
    assert main(["fit-kernel", "--out", "figure.txt"]) == 2
    err = capsys.readouterr().err
    assert "no such picture file" in err and "--out must end in" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["fit-kernel", "--lr", "-1"])
