"""write_atomically: the final file's mode follows the umask, and a writer killed half-way leaves nothing for good."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import gpucnn
from gpucnn.files import remove_stale_temporaries, write_atomically

posix = pytest.mark.skipif(os.name != "posix", reason="umask and flock are POSIX")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@posix
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_checkpoint_gets_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        gpucnn.save(tmp_path / "ck.npz", gpucnn.nn.Linear(2, 3))
        with open(tmp_path / "plain", "wb"):
            pass
    finally:
        os.umask(old)
    assert _mode(tmp_path / "ck.npz") == 0o666 & ~umask == _mode(tmp_path / "plain")


@posix
def test_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "ck.npz"
    gpucnn.save(target, gpucnn.nn.Linear(2, 3))
    os.chmod(target, 0o640)
    gpucnn.save(target, gpucnn.nn.Linear(2, 3))
    assert _mode(target) == 0o640


def test_stale_temporaries_of_the_path_go_and_nothing_else(tmp_path):
    target = tmp_path / "ck.npz"
    stale = [tmp_path / ".ck.npz.a1b2c3d4.tmp", tmp_path / ".ck.npz.x_9kq2mz.tmp"]  # ours and mkstemp's names
    others = [tmp_path / ".other.npz.a1b2c3d4.tmp", tmp_path / ".ck.npz.a1b2c3d4.tmp.keep",
              tmp_path / "ck.npz.a1b2c3d4.tmp", tmp_path / "notes.txt"]
    for p in stale + others:
        p.write_bytes(b"x" * 10)
    write_atomically(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in others)


@pytest.mark.skipif(os.name != "posix", reason="flock is POSIX")
def test_a_live_writers_temporary_is_left_alone(tmp_path):
    target = tmp_path / "ck.npz"
    seen = []

    def write(f):
        # while this writer is mid-file, another save of the same path cleans up: it must not take ours
        (live,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        seen.append(live)
        assert remove_stale_temporaries(target) == []
        assert live.exists()
        f.write(b"done")

    write_atomically(target, write)
    assert target.read_bytes() == b"done" and seen and not seen[0].exists()


def test_error_while_writing_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "ck.npz"
    target.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_kill_during_save_then_next_save_cleans_up(tmp_path):
    target = tmp_path / "ck.npz"
    gpucnn.save(target, gpucnn.nn.Linear(4, 4))
    before = target.read_bytes()
    # a writer that stops half-way through its file and waits to be killed
    script = textwrap.dedent(f"""
        import sys, time
        from gpucnn.files import write_atomically
        def write(f):
            f.write(b"half a checkpoint")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        write_atomically({str(target)!r}, write)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and target.read_bytes() == before  # the crash kept the old checkpoint
    time.sleep(0.01)
    model = gpucnn.nn.Linear(4, 4)
    gpucnn.save(target, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]
    again = gpucnn.nn.Linear(4, 4)
    gpucnn.load(target, again)
    np.testing.assert_array_equal(again.weight.numpy(), model.weight.numpy())
