"""``npconv bench`` runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json

import numpy as np

from npconv.cli import main


def test_bench_suite_writes_json_and_plot(tmp_path, torch):
    out, png = tmp_path / "suite.json", tmp_path / "suite.png"
    assert main(["bench", "suite", "--layers", "book,lenet2", "--repeat", "1",
                 "--json", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    assert [r["id"] for r in result["rows"]] == ["book", "lenet2"]
    for row in result["rows"]:
        assert row["max_abs_err"] < 1e-3 and row["ms"] > 0 and "speedup" in row
    assert result["sgemm_peak_gflops"] > 0 and "oneDNN" in result["torch"]
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


def test_bench_suite_autotune_reports_the_measured_choice(tmp_path, torch):
    from npconv import tuning

    out = tmp_path / "suite.json"
    assert main(["bench", "suite", "--layers", "book", "--repeat", "1", "--autotune",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["autotune"] is True
    assert all(a in tuning.CANDIDATES for a in result["rows"][0]["algorithm"].split("/"))
    assert not tuning.autotune_enabled()  # switched back off afterwards
