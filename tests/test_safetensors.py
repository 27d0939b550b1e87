""".safetensors checkpoints: save_safetensors/load_safetensors, and gpucnn.save/load choosing them by suffix."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("safetensors")

import gpucnn  # noqa: E402
import gpucnn.functional as F  # noqa: E402
from gpucnn.safetensors_io import load_safetensors, save_safetensors  # noqa: E402
from gpucnn.serialization import CheckpointError  # noqa: E402


@pytest.fixture(autouse=True)
def _numpy_backend():
    with gpucnn.use_backend("numpy"):
        yield


def test_round_trip_arrays_and_meta(tmp_path):
    arrays = {"param/w": np.arange(6, dtype=np.float32).reshape(2, 3), "buffer/n": np.array(3, dtype=np.int64),
              "optim/x/momentum": np.ones(4, dtype=np.float64)}
    meta = {"model": "M", "extra": {"epoch": 2, "name": "é"}}
    path = tmp_path / "sub" / "a.safetensors"
    save_safetensors(path, arrays, meta)
    got, got_meta = load_safetensors(path)
    assert got_meta == meta and set(got) == set(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape
        np.testing.assert_array_equal(got[name], a)
    assert [p.name for p in path.parent.iterdir()] == ["a.safetensors"]  # no temporary file left behind


def _trained_resnet():
    model = gpucnn.ResNet(depth=8, width=4, rng=np.random.default_rng(0))
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = gpucnn.tensor(np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32))
    loss = F.cross_entropy(model(x), np.array([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    return model, opt


def test_save_load_dispatch_by_suffix(tmp_path):
    model, opt = _trained_resnet()
    path = tmp_path / "ckpt.safetensors"
    gpucnn.save(path, model, opt, extra={"epoch": 1})
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a zip
    fresh = gpucnn.ResNet(depth=8, width=4, rng=np.random.default_rng(5))
    fresh_opt = gpucnn.optim.SGD(fresh.parameters(), lr=0.5)
    assert gpucnn.load(path, fresh, fresh_opt) == {"epoch": 1}
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)
    assert fresh_opt.lr == 0.01
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert p.state.keys() == q.state.keys() and p.state
        for key in p.state:
            np.testing.assert_array_equal(p.state[key], q.state[key])
    npz = tmp_path / "ckpt.npz"
    gpucnn.save(npz, model)
    assert npz.read_bytes()[:4] == b"PK\x03\x04"  # the .npz path is unchanged


def test_damaged_and_foreign_files_name_the_path(tmp_path):
    model, _ = _trained_resnet()
    path = tmp_path / "m.safetensors"
    gpucnn.save(path, model)
    data = path.read_bytes()
    cases = {"empty": b"", "short": data[:5], "truncated": data[: len(data) // 2], "text": b"hello world, not a file",
             "header": data[:8] + b"!" + data[9:]}
    for label, content in cases.items():
        bad = tmp_path / f"{label}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(CheckpointError, match=str(bad)):
            gpucnn.load(bad, model)
    # a flipped bit in the data: safetensors does not notice, the sha256 in the meta does
    flipped = bytearray(data)
    flipped[-3] ^= 0x10
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        gpucnn.load(tmp_path / "flip.safetensors", model)
    # valid safetensors files that gpucnn did not write
    import safetensors.numpy

    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(safetensors.numpy.save({"w": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match="not a gpucnn checkpoint"):
        gpucnn.load(foreign, model)
    other = tmp_path / "other.safetensors"
    other.write_bytes(safetensors.numpy.save({"w": np.zeros(3, np.float32)},
                                             metadata={"gpucnn": json.dumps({"format": "something-else"})}))
    with pytest.raises(CheckpointError, match="format"):
        gpucnn.load(other, model)
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="directory"):
        gpucnn.load(folder, model)
    with pytest.raises(FileNotFoundError):
        gpucnn.load(tmp_path / "missing.safetensors", model)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.safetensors"
    save_safetensors(path, {"x": np.ones(2, np.float32)}, {"v": 1})
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_safetensors(path, {"x": np.zeros(2, np.float32)}, {"v": 2})
    assert load_safetensors(path)[1] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
