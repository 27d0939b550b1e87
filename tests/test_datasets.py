"""The MNIST loader: IDX parsing, integrity checks, search order, batches; no network."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error

import numpy as np
import pytest

from gpucnn import datasets
from gpucnn.backends.registry import get_backend
from gpucnn.datasets import (
    MNIST_FILES,
    BatchIterator,
    DatasetError,
    DatasetNotFoundError,
    load_mnist,
    normalize,
    parse_idx,
    random_shift,
    read_idx,
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist(folder, n_train=20, n_test=10, gz=True):
    """A tiny MNIST-shaped set; returns the hashes to patch in place of the real ones."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for stem, array in arrays.items():
        raw = idx_bytes(array)
        hashes[stem] = hashlib.sha256(raw).hexdigest()
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return hashes, arrays


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No GPUCNN_DATA_DIR, an empty cache, and no network."""
    monkeypatch.delenv("GPUCNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    return tmp_path


def test_parse_idx_header_and_data():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(a)), a)
    labels = np.array([3, 1, 4], np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels)), labels)


def test_rejects_wrong_magic_and_truncation(tmp_path):
    good = idx_bytes(np.zeros((2, 2, 2)))
    with pytest.raises(DatasetError, match="wrong magic number 08030000"):
        parse_idx(b"\x08\x03\x00\x00" + good[4:])
    with pytest.raises(DatasetError, match=r"truncated or padded: header says shape \(2, 2, 2\)"):
        parse_idx(good[:-1])
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(DatasetError, match="damaged or truncated gzip"):
        read_idx(path)


def test_checksum_mismatch_is_explained(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.array([1, 2, 3])))
    with pytest.raises(DatasetError, match="checksum mismatch.*delete it and download it again"):
        read_idx(path, MNIST_FILES["train-labels-idx1-ubyte"])


@pytest.mark.parametrize("where", ["argument", "environment", "cache"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_search_locations(isolated, monkeypatch, where, gz):
    folder = isolated / where / "mnist"
    hashes, arrays = fake_mnist(folder, gz=gz)
    monkeypatch.setattr(datasets, "MNIST_FILES", hashes)
    if where == "environment":
        monkeypatch.setenv("GPUCNN_DATA_DIR", str(isolated / where))
    elif where == "cache":
        monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "cache-root"))
        fake_mnist(isolated / "cache-root" / "gpucnn" / "mnist", gz=gz)
    data = load_mnist(isolated / where if where == "argument" else None)
    assert data.train_images.shape == (20, 1, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_labels.shape == (10,)
    if where != "cache":
        np.testing.assert_array_equal(data.train_labels, arrays["train-labels-idx1-ubyte"])


def test_argument_wins_over_environment(isolated, monkeypatch):
    hashes, arrays = fake_mnist(isolated / "arg", n_train=20)
    monkeypatch.setattr(datasets, "MNIST_FILES", hashes)
    fake_mnist(isolated / "env", n_train=30)
    monkeypatch.setenv("GPUCNN_DATA_DIR", str(isolated / "env"))
    assert len(load_mnist(isolated / "arg").train_images) == 20


def test_offline_without_files_says_where_to_put_them(isolated):
    (isolated / "nowhere").mkdir()  # a named folder that is missing is refused without a download (test_data_dir.py)
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(isolated / "nowhere")
    message = str(info.value)
    assert "download failed (offline?)" in message and "network is unreachable" in message
    assert str(isolated / "nowhere") in message and "GPUCNN_DATA_DIR" in message
    assert "train-images-idx3-ubyte.gz" in message


@pytest.mark.parametrize("download", [True, False], ids=["offline", "no-download"])
def test_not_found_names_every_way_to_point_at_the_files(isolated, download):
    """Script users get the script's option, not only the Python argument."""
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(download=download)
    message = str(info.value)
    assert "data_dir=" in message and "--data-dir" in message and "GPUCNN_DATA_DIR" in message


def test_the_folder_announced_is_the_folder_asked_for_and_searched(isolated, monkeypatch, capsys):
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist()
    announced = capsys.readouterr().err.split("downloading into ", 1)[1].split()[0]
    cache = isolated / "cache" / "gpucnn" / "mnist"
    assert announced == str(cache)
    message = str(info.value)
    assert f"in {cache}," in message  # "put the four files in <that folder>, ..."
    # no other folder of the cache is offered: wherever the message names it, it names its mnist/
    assert all(rest.startswith(f"{os.sep}mnist") for rest in message.split(str(cache.parent))[1:])
    # and a user who puts the files there is served from there
    hashes, _ = fake_mnist(cache)
    monkeypatch.setattr(datasets, "MNIST_FILES", hashes)
    assert len(load_mnist().train_images) == 20


def test_a_failed_download_leaves_no_empty_folder(isolated):
    with pytest.raises(DatasetNotFoundError):
        load_mnist()
    assert not (isolated / "cache").exists()


def test_a_failed_download_keeps_folders_that_were_there(isolated):
    sim_cache = isolated / "cache" / "gpucnn" / "sim"
    sim_cache.mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError):
        load_mnist()
    assert sorted(p.name for p in (isolated / "cache" / "gpucnn").iterdir()) == ["sim"]


def test_the_tests_find_mnist_where_load_mnist_does(isolated, monkeypatch):
    """A user who let load_mnist() download MNIST into the cache gets the MNIST tests run, not skipped."""
    from conftest import mnist_dir

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(isolated / "home"))
    hashes, arrays = fake_mnist(isolated / "home" / ".cache" / "gpucnn" / "mnist")
    monkeypatch.setattr(datasets, "MNIST_FILES", hashes)
    found = mnist_dir()
    assert found is not None
    np.testing.assert_array_equal(load_mnist(found, download=False).train_labels, arrays["train-labels-idx1-ubyte"])
    monkeypatch.setenv("GPUCNN_DATA_DIR", str(isolated / "env"))
    monkeypatch.setattr(datasets, "MNIST_FILES", fake_mnist(isolated / "env", n_train=30)[0])
    assert len(load_mnist(mnist_dir(), download=False).train_images) == 30  # the loader's order: env first


def test_real_mnist_verifies(mnist_path):
    data = load_mnist(mnist_path, download=False)
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    x = normalize(data.train_images[:1000])
    assert x.dtype == np.float32 and abs(x.mean()) < 0.2 and 0.8 < x.std() < 1.2
    assert normalize(data.train_images[:2], pad=2).shape == (2, 1, 32, 32)


def test_batches_cover_the_set_once_and_reproducibly():
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    labels = np.arange(10)
    backend = get_backend("numpy")
    seen = [y for _, y in BatchIterator(images, labels, 4, backend, rng=np.random.default_rng(1))]
    assert [len(b) for b in seen] == [4, 4, 2]
    assert sorted(np.concatenate(seen).tolist()) == list(range(10))
    again = [y for _, y in BatchIterator(images, labels, 4, backend, rng=np.random.default_rng(1))]
    assert all((a == b).all() for a, b in zip(seen, again))
    for x, y in BatchIterator(images, labels, 3, backend, shuffle=False, drop_last=True, resident=True):
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)
    assert len(BatchIterator(images, labels, 3, backend, drop_last=True)) == 3


def test_random_shift_moves_each_image_within_bounds():
    x = np.zeros((50, 1, 8, 8), np.float32)
    x[:, 0, 4, 4] = 1.0
    shifted = random_shift(x, 2, np.random.default_rng(0))
    assert shifted.shape == x.shape
    rows, cols = np.nonzero(shifted[:, 0].reshape(50, 8, 8).sum(axis=0))
    positions = {(int(np.argmax(s[0]) // 8), int(np.argmax(s[0]) % 8)) for s in shifted}
    assert all(2 <= r <= 6 and 2 <= c <= 6 for r, c in positions) and len(positions) > 5
    assert (shifted.sum(axis=(1, 2, 3)) == 1).all()  # nothing lost, nothing duplicated


class _FakeResponse:
    def __init__(self, data: bytes) -> None:
        self.data, self.headers = data, {"Content-Length": str(len(data))}

    def read(self, size: int = -1) -> bytes:
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_falls_back_across_mirrors_and_verifies(isolated, monkeypatch):
    """No network: urlopen serves a fake set. The first mirror is down, the second serves a
    corrupt file (rejected by its checksum), the third the right one, which is then cached."""
    source = isolated / "served"
    hashes, arrays = fake_mnist(source)
    monkeypatch.setattr(datasets, "MNIST_FILES", hashes)
    requested = []

    def urlopen(url, timeout):
        requested.append(url)
        if url.startswith("http://down/"):
            raise urllib.error.URLError("connection refused (test)")
        name = url.rsplit("/", 1)[1]
        if url.startswith("http://corrupt/"):
            return _FakeResponse(gzip.compress(b"not an idx file"))
        return _FakeResponse((source / name).read_bytes())

    monkeypatch.setattr(datasets.urllib.request, "urlopen", urlopen)
    (isolated / "nowhere").mkdir()  # named and empty: the search goes on to the cache, then the mirrors
    data = load_mnist(isolated / "nowhere", mirrors=("http://down/", "http://corrupt/", "http://good/"))
    np.testing.assert_array_equal(data.train_labels, arrays["train-labels-idx1-ubyte"])
    assert len(requested) == 12  # three mirrors tried for each of the four files
    cached = isolated / "cache" / "gpucnn" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f"{stem}.gz" for stem in hashes)
    # the second load finds the cache and downloads nothing
    requested.clear()
    load_mnist(isolated / "nowhere", mirrors=("http://down/",))
    assert requested == []
