"""examples/train_mnist.py's command line: values and paths refused before training, resume in job
scripts, the closing line's epoch count, the filters picture's layout and the README's flag list."""

from __future__ import annotations

import importlib.util
import os
import re
import stat

import numpy as np
import pytest

import gpucnn

from conftest import REPO

spec = importlib.util.spec_from_file_location("train_mnist_cli", REPO / "examples" / "train_mnist.py")
train_mnist = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_mnist)

# a run of a few seconds on the numpy backend: enough to write and resume a checkpoint
TINY = ["--backend", "numpy", "--limit", "64", "--test-limit", "64", "--batch-size", "32", "--no-progress"]


def _refused(argv: list[str], capsys) -> str:
    """The one error line argparse printed for ``argv`` (exit status 2, before any data is loaded)."""
    with pytest.raises(SystemExit) as exc:
        train_mnist.main(argv)
    captured = capsys.readouterr()
    assert exc.value.code == 2, f"expected exit status 2, got {exc.value.code}; stderr: {captured.err}"
    assert "Traceback" not in captured.err and "epoch" not in captured.out, captured
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1, f"expected one error line, got: {captured.err!r}"
    return errors[0]


# --- values --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, expected", [
    ("--limit", "-5", ">= 1"), ("--limit", "0", ">= 1"), ("--test-limit", "-1", ">= 1"),
    ("--test-limit", "0", ">= 1"), ("--shift", "-1", ">= 0"), ("--epochs", "0", ">= 1"),
    ("--epochs", "-2", ">= 1"), ("--batch-size", "0", ">= 1"), ("--stop-after", "0", ">= 1"),
    ("--stop-after", "-1", ">= 1"), ("--lr", "0", "> 0"), ("--lr", "-0.1", "> 0"), ("--lr", "nan", "> 0"),
    ("--momentum", "-0.5", ">= 0"), ("--weight-decay", "-1e-4", ">= 0"), ("--pct-start", "1.5", "in [0, 1]"),
    ("--label-smoothing", "-0.1", "in [0, 1]"), ("--batch-size", "many", ">= 1"),
])
def test_out_of_range_values_are_refused_like_argparse_refuses(flag, value, expected, capsys):
    # flag=value: argparse takes -1e-4 after a space for an option of its own
    line = _refused([f"{flag}={value}"], capsys)
    assert f"argument {flag}:" in line and expected in line and repr(value) in line, line


def test_values_at_their_bounds_are_accepted():
    args = train_mnist.parse_args(["--limit", "1", "--test-limit", "1", "--shift", "0", "--epochs", "1",
                                   "--stop-after", "1", "--momentum", "0", "--weight-decay", "0",
                                   "--pct-start", "1", "--label-smoothing", "0", "--lr", "1e-6"])
    assert (args.limit, args.test_limit, args.shift, args.epochs, args.stop_after) == (1, 1, 0, 1, 1)
    assert (args.momentum, args.weight_decay, args.pct_start, args.label_smoothing, args.lr) == (0, 0, 1, 0, 1e-6)


# --- output paths, checked before training -------------------------------------------------------------------


def test_save_naming_a_directory_is_refused_before_training(tmp_path, capsys):
    line = _refused(["--save", str(tmp_path)], capsys)
    assert f"--save {tmp_path}" in line and "directory" in line, line


def test_save_in_a_missing_folder_is_refused_before_training(tmp_path, capsys):
    path = tmp_path / "no" / "such" / "ck.npz"
    line = _refused(["--save", str(path)], capsys)
    assert f"{tmp_path / 'no' / 'such'} does not exist" in line, line


def test_save_under_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    line = _refused(["--save", str(tmp_path / "file" / "ck.npz")], capsys)
    assert "is not a folder" in line, line


def test_save_in_an_unwritable_folder_is_refused_before_training(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(folder, os.W_OK):  # root writes regardless of the mode: make the probe file fail instead
            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(train_mnist.tempfile, "TemporaryFile", refuse)
        line = _refused(["--save", str(folder / "ck.npz")], capsys)
    finally:
        folder.chmod(stat.S_IRWXU)
    assert f"--save {folder / 'ck.npz'}" in line and "Permission denied" in line, line


def test_plot_may_name_a_folder_still_to_be_made_but_not_a_directory(tmp_path, capsys):
    args = train_mnist.parse_args(["--plot", str(tmp_path / "runs" / "new" / "run.png")])
    assert args.plot.endswith("run.png")
    line = _refused(["--plot", str(tmp_path)], capsys)
    assert "--plot" in line and "directory" in line, line


def test_resume_naming_a_directory_is_refused(tmp_path, capsys):
    line = _refused(["--resume", str(tmp_path)], capsys)
    assert "--resume" in line and "directory" in line, line


# --- resume in job scripts -----------------------------------------------------------------------------------


def test_always_resume_job_line_starts_fresh_then_continues(mnist_path, tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    job = TINY + ["--data-dir", str(mnist_path), "--save", str(ck), "--resume", str(ck)]
    assert train_mnist.main(job + ["--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert f"no checkpoint at {ck} yet: starting fresh" in out, out
    assert "after 1 epoch (" in out, out  # the true count, and no "1 epochs"
    assert ck.exists()

    assert train_mnist.main(job + ["--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {ck} after epoch 1" in out and "after 2 epochs (1 epoch in " in out, out

    # nothing left to do: said so, and the count is still that of the checkpoint's run
    assert train_mnist.main(job + ["--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "nothing left to train" in out and "after 2 epochs (none this run)" in out, out


def test_damaged_checkpoint_is_one_line_and_status_2(mnist_path, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip file")
    assert train_mnist.main(TINY + ["--data-dir", str(mnist_path), "--epochs", "1", "--resume", str(bad)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in captured.err, captured.err
    assert "epoch   1" not in captured.out, captured.out


def test_checkpoint_of_another_seed_is_one_line_and_status_2(mnist_path, tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    base = TINY + ["--data-dir", str(mnist_path), "--epochs", "2"]
    assert train_mnist.main(base + ["--save", str(ck), "--stop-after", "1"]) == 0
    capsys.readouterr()
    assert train_mnist.main(base + ["--seed", "7", "--resume", str(ck)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "seed" in err and "Traceback" not in err, err


# --- the filters picture -------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_channels", [1, 3])
def test_filters_title_clears_the_subplot_titles(in_channels, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from gpucnn import plots

    figures = []
    save = plots._save

    def keep(fig, path):
        fig.canvas.draw()  # lays the figure out as savefig will
        renderer = fig.canvas.get_renderer()
        figures.append((fig._suptitle.get_window_extent(renderer),
                        [(ax.title.get_text(), ax.title.get_window_extent(renderer)) for ax in fig.axes
                         if ax.title.get_text()],
                        [ax.get_window_extent(renderer) for ax in fig.axes]))
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    model = gpucnn.Sequential(gpucnn.Conv2d(in_channels, 6, 5, rng=np.random.default_rng(0)), gpucnn.ReLU())
    assert plots.filters(model, tmp_path / "filters.png").stat().st_size > 2000
    (suptitle, titles, axes), = figures
    assert len(titles) == 6, f"expected one title per filter, got {[t for t, _ in titles]}"
    for text, box in titles:
        assert not suptitle.overlaps(box), f"the suptitle {suptitle} overlaps {text!r} at {box}"
    for box in axes:
        assert not suptitle.overlaps(box), f"the suptitle {suptitle} overlaps an axes at {box}"


# --- the README ----------------------------------------------------------------------------------------------


def test_readme_lists_every_flag_of_the_example():
    readme = (REPO / "README.md").read_text()
    found = re.search(r"`examples/train_mnist\.py` uses \(`([^`]*)`", readme)
    assert found, "expected the README's flag list: it is what `examples/train_mnist.py` uses (`--backend ...`"
    listed = set(re.findall(r"--[a-z][a-z-]*", found.group(1)))
    defined = {option for action in train_mnist.build_parser()._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"}
    assert listed == defined, (f"README lacks {sorted(defined - listed)}; "
                               f"README lists flags the example does not have: {sorted(listed - defined)}")
