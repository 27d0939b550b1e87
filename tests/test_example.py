"""examples/train_mnist.py end to end on a subset: accuracy, checkpoints, resume, pictures."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("train_mnist", REPO / "examples" / "train_mnist.py")
train_mnist = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_mnist)

COMMON = ["--backend", "numpy", "--limit", "3000", "--test-limit", "1000", "--batch-size", "64", "--lr", "0.02",
          "--no-progress", "--seed", "3"]


@pytest.mark.slow
def test_example_trains_resumes_and_plots(mnist_path, tmp_path, capsys):
    args = COMMON + ["--data-dir", str(mnist_path)]
    full = tmp_path / "full.npz"
    assert train_mnist.main(args + ["--epochs", "3", "--save", str(full), "--plot", str(tmp_path / "run.png")]) == 0
    out = capsys.readouterr().out
    final = float(out.split("final test accuracy ")[1].split("%")[0])
    assert final > 90.0, out

    # stop after one epoch, then resume to three: the same weights as the uninterrupted run
    part = tmp_path / "part.npz"
    assert train_mnist.main(args + ["--epochs", "3", "--save", str(part), "--stop-after", "1"]) == 0
    with np.load(part) as partial:
        assert "param/0.weight" in partial.files
    resumed = tmp_path / "resumed.npz"
    assert train_mnist.main(args + ["--epochs", "3", "--resume", str(part), "--save", str(resumed)]) == 0
    assert "resumed from" in capsys.readouterr().out
    with np.load(full) as a, np.load(resumed) as b:
        for key in a.files:
            if key != "meta":
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    pytest.importorskip("matplotlib")
    for name in ("run.png", "run_confusion.png", "run_filters.png", "run_feature_maps.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name


def test_example_reports_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GPUCNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    import urllib.error

    from gpucnn import datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    assert train_mnist.main(["--data-dir", str(tmp_path / "none"), "--epochs", "1", "--no-progress"]) == 1
    assert "Put the four files" in capsys.readouterr().err


def test_example_without_gpu_says_what_is_missing(capsys):
    import gpucnn

    if gpucnn.cuda_is_available():
        pytest.skip("this machine has a GPU")
    assert train_mnist.main(["--backend", "cuda", "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the cuda backend needs" in err and "Traceback" not in err
