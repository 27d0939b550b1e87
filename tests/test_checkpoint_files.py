"""Checkpoint files: damaged, foreign and old files each raise one CheckpointError that names the path and why.

Most tests drive read_checkpoint/write_checkpoint on plain dicts of arrays, so they do not depend on the layer API.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import gpucnn
from gpucnn.serialization import FORMAT, CheckpointError, read_checkpoint, write_checkpoint

ARRAYS = {
    "param/0.weight": np.arange(12, dtype=np.float32).reshape(2, 2, 3),
    "param/0.bias": np.array([-1.5, 2.5], dtype=np.float64),
    "buffer/n": np.array(7, dtype=np.int64),
    "optim/0.bias/empty": np.zeros((0, 3), dtype=np.float32),
    "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
}


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "ck.npz"
    write_checkpoint(path, ARRAYS, {"model": "Test", "extra": {"epoch": 3}})
    return path


def _model():
    with gpucnn.use_backend("numpy"):
        return gpucnn.Sequential(gpucnn.Conv2d(1, 2, 3), gpucnn.ReLU(), gpucnn.Flatten(), gpucnn.Linear(8, 2))


def _refused(path, reason: str) -> str:
    """read_checkpoint(path) raises a CheckpointError naming the path and the reason; returns the message."""
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and reason in message, message
    return message


def _assert_same(arrays, expected):
    assert sorted(arrays) == sorted(expected)
    for name, a in expected.items():
        assert arrays[name].dtype == a.dtype and arrays[name].shape == a.shape, name
        np.testing.assert_array_equal(arrays[name], a)


def test_round_trip_writes_version_2_with_a_checksum(checkpoint):
    arrays, meta = read_checkpoint(checkpoint)
    _assert_same(arrays, ARRAYS)
    assert meta["format"] == FORMAT and meta["version"] == 2 and len(meta["sha256"]) == 64
    assert meta["model"] == "Test" and meta["extra"] == {"epoch": 3}


def test_model_round_trip_through_save_and_load(tmp_path):
    model, other = _model(), _model()
    gpucnn.save(tmp_path / "m.npz", model, extra={"epoch": 1})
    assert gpucnn.load(tmp_path / "m.npz", other) == {"epoch": 1}
    for (_, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert read_checkpoint(tmp_path / "m.npz")[1]["version"] == 2


@pytest.mark.parametrize("keep", [1, 3, 4, 30, 200, 0.5, -22, -1])
def test_truncated_file(checkpoint, keep):
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: keep if keep >= 1 else int(len(data) * keep)])
    _refused(checkpoint, "is truncated or corrupt")


def test_empty_file(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    _refused(tmp_path / "empty.npz", "is truncated or corrupt (the file is empty)")


def test_flipped_byte_in_array_data_fails_the_checksum(checkpoint):
    data = bytearray(checkpoint.read_bytes())
    at = data.find(ARRAYS["param/0.weight"].tobytes()) + 17
    data[at] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    _refused(checkpoint, "is corrupt: checksum mismatch")


def test_changed_array_in_a_well_formed_zip_fails_the_sha256(checkpoint):
    # a file rewritten with valid zip CRCs (by a tool, or corrupted in memory before it was zipped): only the
    # checksum in the meta can tell
    with np.load(checkpoint, allow_pickle=False) as data:
        entries = {name: data[name] for name in data.files}
    entries["param/0.bias"] = entries["param/0.bias"] + 1
    np.savez(checkpoint, **entries)
    _refused(checkpoint, "is corrupt: checksum mismatch")


def test_missing_checksum_in_a_version_2_file(tmp_path):
    np.savez(tmp_path / "nosum.npz", a=np.zeros(2), meta=np.array(json.dumps({"format": FORMAT, "version": 2})))
    _refused(tmp_path / "nosum.npz", "is corrupt (a version-2 checkpoint without its sha256 checksum)")


@pytest.mark.parametrize("where", ["signature", "name"])
def test_flipped_byte_in_zip_directory(checkpoint, where):
    data = bytearray(checkpoint.read_bytes())
    entry = data.find(b"PK\x01\x02")  # the first central-directory record
    data[entry if where == "signature" else entry + 46] ^= 0x01  # 46: where its file name starts
    checkpoint.write_bytes(bytes(data))
    _refused(checkpoint, "is truncated or corrupt (BadZipFile")


def test_every_single_bit_flip_is_refused_or_harmless(checkpoint):
    """No flipped bit anywhere gives a raw library error or different arrays: the zip CRCs, the header checks
    and the SHA-256 catch each, or it lands in a field nothing reads."""
    good = checkpoint.read_bytes()
    expected_arrays, expected_meta = read_checkpoint(checkpoint)
    refused = 0
    for at in range(len(good)):
        data = bytearray(good)
        data[at] ^= 0x01
        checkpoint.write_bytes(bytes(data))
        try:
            arrays, meta = read_checkpoint(checkpoint)
        except CheckpointError as exc:
            assert str(checkpoint) in str(exc)
            refused += 1
            continue
        _assert_same(arrays, expected_arrays)
        assert meta == expected_meta, at
    assert refused > len(good) * 0.7  # most bytes are data, headers and names, which are checked


def test_npy_file(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3))
    _refused(tmp_path / "w.npy", "is not a gpucnn checkpoint (a single .npy array, not an .npz archive)")


def test_text_file(tmp_path):
    (tmp_path / "notes.npz").write_text("epoch 3: loss 0.1\n")
    _refused(tmp_path / "notes.npz", "is not a gpucnn checkpoint (not an .npz (zip) archive)")


def test_zip_of_something_else(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as archive:
        archive.writestr("README.txt", "hello")
    _refused(tmp_path / "other.npz", "is not a gpucnn checkpoint (entry 'README.txt' is not an .npy array)")


def test_plain_npz_without_meta(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.zeros(2))
    _refused(tmp_path / "plain.npz", "is not a gpucnn checkpoint (it has no 'meta' entry)")


@pytest.mark.parametrize("meta, reason", [
    (np.array(json.dumps({"format": "keras", "version": 2})), "its meta says format 'keras'"),
    (np.array(json.dumps({"version": 1})), "its meta says format None"),
    (np.array("not json {"), "its 'meta' entry is not a JSON object"),
    (np.array(json.dumps([FORMAT, 2])), "its 'meta' entry is not a JSON object"),
    (np.array([1.0, 2.0]), "its 'meta' entry is not a JSON object"),
])
def test_npz_with_meta_of_another_kind(tmp_path, meta, reason):
    np.savez(tmp_path / "foreign.npz", x=np.zeros(2), meta=meta)
    _refused(tmp_path / "foreign.npz", f"is not a gpucnn checkpoint ({reason})")


@pytest.mark.parametrize("version", [3, 0, "2", True, None])
def test_unsupported_version(tmp_path, version):
    meta = {"format": FORMAT, "version": version, "sha256": ""}
    np.savez(tmp_path / "v.npz", meta=np.array(json.dumps(meta)))
    message = _refused(tmp_path / "v.npz", f"has unsupported checkpoint version {version!r}")
    assert "reads versions 1 to 2" in message


class _Payload:
    """Unpickling this creates ``marker``: the test passes only if no reader ever unpickles it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("entry", ["meta", "param/0.weight"])
def test_pickled_objects_are_refused_and_never_run(tmp_path, entry):
    marker, path = tmp_path / "pwned", tmp_path / "evil.npz"
    entries = {"param/0.weight": np.zeros(2), "meta": np.array(json.dumps({"format": FORMAT, "version": 1}))}
    entries[entry] = np.array([_Payload(marker)], dtype=object)
    np.savez(path, **entries)
    _refused(path, f"is not a gpucnn checkpoint (entry {entry!r} holds pickled Python objects")
    with pytest.raises(CheckpointError):
        gpucnn.load(path, _model())
    assert not marker.exists()
    # the payload is live: a reader that unpickles does run it
    with np.load(path, allow_pickle=True) as data:
        data[entry]
    assert marker.exists()


def test_directory_is_refused_and_a_missing_path_is_not_found(tmp_path):
    (tmp_path / "ck.npz").mkdir()
    _refused(tmp_path / "ck.npz", "is not a gpucnn checkpoint (it is a directory)")
    # a missing file is not a damaged one: callers (e.g. an optional resume) tell the two apart
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        gpucnn.load(tmp_path / "nope.npz", _model())


def test_version_1_file_without_checksum_still_loads(tmp_path):
    model = _model()
    path = tmp_path / "v1.npz"
    # written as version 1 did: the arrays and a meta without sha256
    arrays = {f"param/{name}": p.data for name, p in model.named_parameters()}
    meta = {"format": FORMAT, "version": 1, "model": "Sequential", "extra": {"epoch": 2}}
    np.savez(path, **arrays, meta=np.array(json.dumps(meta)))
    assert read_checkpoint(path)[1] == meta
    other = _model()
    assert gpucnn.load(path, other) == {"epoch": 2}
    for (_, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_model_mismatch_is_a_checkpoint_error(tmp_path):
    gpucnn.save(tmp_path / "m.npz", _model())
    with gpucnn.use_backend("numpy"):
        wrong = gpucnn.Sequential(gpucnn.Conv2d(1, 3, 3), gpucnn.ReLU(), gpucnn.Flatten(), gpucnn.Linear(12, 2))
    before = {k: v.copy() for k, v in wrong.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"does not fit Sequential; wrong shape: 0.weight \(given \(2, 1, 3, 3\), "
                                              r"model \(3, 1, 3, 3\)\), 0.bias \(given \(2,\), model \(3,\)\), "
                                              r"3.weight \(given \(2, 8\), model \(2, 12\)\)$"):
        gpucnn.load(tmp_path / "m.npz", wrong)
    for k, v in wrong.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_version_1_file_of_batchnorm_and_conv1d_still_loads(tmp_path):
    """Before autograd, BatchNorm had no num_batches_tracked and Conv1d kept (K, C/groups, 1, KL) weights."""
    def model():
        with gpucnn.use_backend("numpy"):
            return gpucnn.Sequential(gpucnn.Conv1d(2, 3, 3), gpucnn.BatchNorm1d(3), gpucnn.Flatten(),
                                     gpucnn.Linear(6, 2))
    rng = np.random.default_rng(3)
    old = model()
    arrays = {f"param/{name}": rng.standard_normal(p.shape).astype(np.float32)
              for name, p in old.named_parameters()}
    arrays["param/0.weight"] = arrays["param/0.weight"].reshape(3, 2, 1, 3)
    arrays["buffer/1.running_mean"] = rng.standard_normal(3).astype(np.float32)
    arrays["buffer/1.running_var"] = rng.uniform(0.5, 2, 3).astype(np.float32)
    meta = {"format": FORMAT, "version": 1, "model": "Sequential", "extra": {}}
    np.savez(tmp_path / "v1.npz", **arrays, meta=np.array(json.dumps(meta)))
    new = model()
    assert gpucnn.load(tmp_path / "v1.npz", new) == {}
    state = new.state_dict()
    assert state["0.weight"].shape == (3, 2, 3)
    np.testing.assert_array_equal(state["0.weight"], arrays["param/0.weight"].reshape(3, 2, 3))
    for key in ("0.bias", "1.weight", "1.bias", "3.weight", "3.bias"):
        np.testing.assert_array_equal(state[key], arrays[f"param/{key}"])
    np.testing.assert_array_equal(state["1.running_var"], arrays["buffer/1.running_var"])
    assert int(state["1.num_batches_tracked"]) == 0
    # a version-2 file must be complete: the same arrays in one are refused
    write_checkpoint(tmp_path / "v2.npz", arrays, {"model": "Sequential", "extra": {}})
    with pytest.raises(CheckpointError, match=r"missing: 1.num_batches_tracked; .*wrong shape: 0.weight"):
        gpucnn.load(tmp_path / "v2.npz", model())


def test_write_refuses_what_could_not_be_read_back_and_leaves_nothing(tmp_path):
    path = tmp_path / "ck.npz"
    with pytest.raises(TypeError, match="object arrays need pickle"):
        write_checkpoint(path, {"a": np.array([{}], dtype=object)}, {})
    with pytest.raises(ValueError, match="reserved"):
        write_checkpoint(path, {"meta": np.zeros(1)}, {})
    with pytest.raises(TypeError):
        write_checkpoint(path, {"a": np.zeros(1)}, {"extra": object()})  # not JSON
    assert list(tmp_path.iterdir()) == []
