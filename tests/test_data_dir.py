"""load_mnist and the folders it is told about: a named folder that is not there is an error, not a download;
and a download says, as each request starts, what it fetches from where. No network: urlopen is a fake."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
from test_datasets import fake_mnist, isolated  # noqa: F401  (isolated: a fixture)

from gpucnn import datasets
from gpucnn.datasets import DatasetNotFoundError, load_mnist


@pytest.fixture
def requests(isolated, monkeypatch):  # noqa: F811
    """The URLs load_mnist asks for; every request fails as an unreachable network would."""
    asked: list[str] = []

    def urlopen(url, timeout):
        asked.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", urlopen)
    return asked


def test_a_data_dir_that_does_not_exist_is_refused_without_a_download(isolated, requests):  # noqa: F811
    missing = isolated / "typo"
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(missing)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert f"the MNIST folder {missing} does not exist; the data_dir argument" in message
    assert "--data-dir" in message
    assert requests == [] and not (isolated / "cache").exists()


def test_a_gpucnn_data_dir_that_does_not_exist_is_refused_without_a_download(isolated, requests,  # noqa: F811
                                                                             monkeypatch):
    missing = isolated / "not-there"
    monkeypatch.setenv("GPUCNN_DATA_DIR", str(missing))
    with pytest.raises(DatasetNotFoundError, match=f"{missing} does not exist; the environment variable "
                                                   f"GPUCNN_DATA_DIR names it"):
        load_mnist()
    assert requests == []


def test_a_data_dir_that_is_a_file_is_refused(isolated, requests):  # noqa: F811
    path = isolated / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="is a file, not a folder; the data_dir argument .* Name the folder"):
        load_mnist(path)
    assert requests == []


def test_only_the_folders_the_search_reaches_are_held_to_it(isolated, requests, monkeypatch):  # noqa: F811
    """A data_dir holding the files ends the search: a stale GPUCNN_DATA_DIR behind it does not matter;
    an empty data_dir sends the search on to it, and there it is an error."""
    hashes, arrays = fake_mnist(isolated / "here")
    monkeypatch.setattr(datasets, "MNIST_FILES", hashes)
    monkeypatch.setenv("GPUCNN_DATA_DIR", str(isolated / "gone"))
    np.testing.assert_array_equal(load_mnist(isolated / "here").train_labels, arrays["train-labels-idx1-ubyte"])
    (isolated / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="gone does not exist; the environment variable GPUCNN_DATA_DIR"):
        load_mnist(isolated / "empty")
    assert requests == []


def test_each_download_attempt_is_announced_as_it_starts(isolated, monkeypatch, capsys):  # noqa: F811
    """Behind a network that hangs each request takes its whole timeout: the line must come before it."""
    printed_before_request = []

    def urlopen(url, timeout):
        printed_before_request.append(capsys.readouterr().err)
        raise urllib.error.URLError("timed out (test)")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", urlopen)
    with pytest.raises(DatasetNotFoundError, match="download failed"):
        load_mnist(mirrors=("http://first.invalid/", "http://second.invalid/"))
    first = "train-images-idx3-ubyte"
    assert f"downloading {first}.gz from http://first.invalid/ ..." in printed_before_request[0]
    assert f"downloading {first}.gz from http://second.invalid/ ..." in printed_before_request[1]
    assert "failed: <urlopen error timed out (test)>" in printed_before_request[1]  # why the first one was left
    assert len(printed_before_request) == 2  # the first file failed everywhere: the others are not tried
