"""MNIST: read the IDX files, find or download them, verify them, and iterate mini-batches.

Where ``load_mnist`` looks, in order: the ``data_dir`` argument; ``$GPUCNN_DATA_DIR``; the
per-user cache folder ``$XDG_CACHE_HOME/gpucnn/mnist`` (or ``~/.cache/gpucnn/mnist``); then it
downloads into that cache folder from public mirrors. Each place may hold the files directly or in
``mnist/``. ``find_mnist_dir`` answers where that search ends, without reading or downloading.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache import cache_dir
from .progress import progress_bar

#: SHA-256 of each decompressed file (the gzip bytes differ between mirrors)
MNIST_FILES = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
#: mean and standard deviation of the training images scaled to [0, 1]
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetError(ValueError):
    """A data file is malformed or is not the file it claims to be."""


class DatasetNotFoundError(FileNotFoundError):
    """The data set is nowhere local and could not be downloaded."""


def _open_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with gzip's magic (whatever its name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: a damaged or truncated gzip file ({exc})") from exc


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX: 2 zero bytes, a type code, the number of dimensions, big-endian int32 sizes, data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{source}: wrong magic number {data[:4].hex() or '(empty)'}; an IDX file starts "
                           f"with 0000 then a type code (08 for uint8) and the number of dimensions")
    dtype = np.dtype(_IDX_TYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source}: truncated header ({len(data)} bytes, need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(f"{source}: truncated or padded: header says shape {shape} ({expected} bytes in all), "
                           f"file has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not); with ``sha256``, check the decompressed content."""
    path = Path(path)
    data = _open_bytes(path)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise DatasetError(f"{path}: checksum mismatch: the decompressed content has SHA-256 {digest}, expected "
                               f"{sha256}. The file is corrupt, truncated or a different file; delete it and "
                               f"download it again")
    return parse_idx(data, str(path))


def mnist_cache_dir() -> Path:
    """The folder ``load_mnist`` downloads into, and the last place it looks."""
    return cache_dir() / "mnist"


def _find_file(directory: Path, stem: str) -> Path | None:
    for folder in (directory, directory / "mnist"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def search_paths(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories ``load_mnist`` looks in, in order."""
    paths = []
    if data_dir is not None:
        paths.append(Path(data_dir))
    if os.environ.get("GPUCNN_DATA_DIR"):
        paths.append(Path(os.environ["GPUCNN_DATA_DIR"]))
    # the download folder itself, so that the folder a message asks for is the folder searched
    paths.append(mnist_cache_dir())
    return paths


def _files_in(directory: Path) -> dict[str, Path] | None:
    found = {stem: _find_file(directory, stem) for stem in MNIST_FILES}
    return found if all(found.values()) else None  # type: ignore[return-value]


def find_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first search path holding all four files (``load_mnist(data_dir)`` reads from it), or None."""
    return next((d for d in search_paths(data_dir) if _files_in(d) is not None), None)


def locate_mnist(data_dir: str | os.PathLike | None = None) -> dict[str, Path] | None:
    """The four files of the first search path holding them all, as {stem: path}; None if none does."""
    directory = find_mnist_dir(data_dir)
    return None if directory is None else _files_in(directory)


def _put_them() -> str:
    names = ", ".join(f"{stem}.gz" for stem in MNIST_FILES)
    return (f"Put the four files ({names}) in {mnist_cache_dir()}, where load_mnist() looks by default, or in a "
            f"folder of your own and name it: data_dir= in Python, --data-dir with examples/train_mnist.py, or the "
            f"environment variable GPUCNN_DATA_DIR.")


def _where_to_put_them(data_dir: str | os.PathLike | None) -> str:
    looked = ", ".join(str(p) for p in search_paths(data_dir))
    return f"{_put_them()}\nLooked in (each folder and its mnist/): {looked}"


def _check_named_folders(data_dir: str | os.PathLike | None) -> None:
    """Refuse a folder the user named (``data_dir``, then ``$GPUCNN_DATA_DIR``) that is not there.

    Only the folders the search reaches count: one that holds the files ends it. A mistyped path
    would otherwise send the loader on to the cache and a download, far from the folder meant."""
    named = []
    if data_dir is not None:
        named.append((Path(data_dir), "the data_dir argument (--data-dir with examples/train_mnist.py)"))
    if os.environ.get("GPUCNN_DATA_DIR"):
        named.append((Path(os.environ["GPUCNN_DATA_DIR"]), "the environment variable GPUCNN_DATA_DIR"))
    for folder, setting in named:
        if not folder.is_dir():
            if folder.exists():
                what, fix = "is a file, not a folder", "name the folder that holds the four files"
            else:
                what, fix = "does not exist", "check the path (or create the folder and put the four files in it)"
            raise DatasetNotFoundError(
                f"load_mnist: the MNIST folder {folder} {what}; {setting} names it, so nothing was downloaded. "
                f"{fix.capitalize()}, or leave the setting out to use {mnist_cache_dir()}, downloading into it if "
                f"need be.\n{_put_them()}")
        if _files_in(folder) is not None:
            return


def _remove_if_empty(folders: list[Path]) -> None:
    """Take back the folders a failed download created (deepest first), unless something is in them now."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (a file did arrive, or another process uses it) or already gone
            return


def _download(stem: str, target_dir: Path, mirrors: tuple[str, ...]) -> Path:
    """Fetch ``stem``.gz from the first mirror that serves a file with the right content."""
    target_dir.mkdir(parents=True, exist_ok=True)
    final = target_dir / (stem + ".gz")
    errors = []
    for mirror in mirrors:
        url = mirror + stem + ".gz"
        # before the request: behind a network that hangs, each mirror can take the whole timeout
        print(f"downloading {stem}.gz from {mirror} ...", file=sys.stderr, flush=True)
        fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{stem}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
                bar = progress_bar(int(response.headers.get("Content-Length") or 0) or None, stem, unit="B",
                                   unit_scale=True)
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
                bar.close()
            read_idx(tmp, MNIST_FILES[stem])
            os.replace(tmp, final)
            return final
        except (urllib.error.URLError, OSError, TimeoutError, DatasetError) as exc:
            errors.append(f"{url}: {exc}")
            print(f"  failed: {exc}", file=sys.stderr, flush=True)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DatasetNotFoundError("\n  ".join([f"could not download {stem}.gz:", *errors]))


@dataclass
class MNIST:
    """The four arrays: images uint8 (N, 1, 28, 28), labels int64 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True, verify: bool = True,
               mirrors: tuple[str, ...] = MNIST_MIRRORS) -> MNIST:
    """Find (or download and cache), verify and read MNIST.

    A ``data_dir`` or ``$GPUCNN_DATA_DIR`` naming a folder that does not exist raises
    DatasetNotFoundError (a FileNotFoundError) at once, without downloading."""
    _check_named_folders(data_dir)
    found = locate_mnist(data_dir)
    if found is None:
        if not download:
            raise DatasetNotFoundError(f"MNIST not found. {_where_to_put_them(data_dir)}")
        target = mnist_cache_dir()
        created = [folder for folder in (target, *target.parents) if not folder.exists()]
        print(f"MNIST not found locally; downloading into {target}", file=sys.stderr)
        try:
            found = {stem: _download(stem, target, mirrors) for stem in MNIST_FILES}
        except DatasetNotFoundError as exc:
            _remove_if_empty(created)
            raise DatasetNotFoundError(
                f"MNIST not found and the download failed (offline?).\n{exc}\n{_where_to_put_them(data_dir)}"
            ) from None
    arrays = {stem: read_idx(path, MNIST_FILES[stem] if verify else None) for stem, path in found.items()}
    for kind in ("train", "t10k"):
        images, labels = arrays[f"{kind}-images-idx3-ubyte"], arrays[f"{kind}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"MNIST {kind}: images {images.shape} and labels {labels.shape} do not match")
    return MNIST(arrays["train-images-idx3-ubyte"][:, None], arrays["train-labels-idx1-ubyte"].astype(np.int64),
                 arrays["t10k-images-idx3-ubyte"][:, None], arrays["t10k-labels-idx1-ubyte"].astype(np.int64))


def normalize(images: np.ndarray, mean: float = MNIST_MEAN, std: float = MNIST_STD, pad: int = 0,
              dtype: Any = np.float32) -> np.ndarray:
    """uint8 (N, 1, H, W) -> float (N, 1, H+2*pad, W+2*pad), (x/255 - mean)/std; padding is background."""
    x = (images.astype(dtype) / dtype(255) - dtype(mean)) / dtype(std)
    if pad:
        background = dtype(-mean / std)
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=background)
    return np.ascontiguousarray(x, dtype=dtype)


def random_shift(x: Any, max_shift: int, rng: np.random.Generator, xp: Any = np, offsets: Any = None,
                 background: float | None = None) -> Any:
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift] (or by the given
    ``offsets``, (N, 2)), filling with the edge background (the batch's smallest value unless given:
    a number or a 0-d array on ``xp``); one gather for the whole batch, no loop over images.

    Only the offsets (drawn on the host) travel, host to device: nothing is read back, so on a GPU
    the shift is queued like any other kernel and the host does not wait."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    if offsets is None:
        offsets = shift_offsets(rng, n, max_shift)
    if background is None:
        background = x.min()  # a 0-d array where x is: float() of it would wait for the device
    padded = xp.empty((n, c, h + 2 * max_shift, w + 2 * max_shift), dtype=x.dtype)
    padded[...] = background  # xp.full may not take a 0-d device array; assignment broadcasts it
    padded[:, :, max_shift:max_shift + h, max_shift:max_shift + w] = x
    rows = xp.asarray(np.arange(h)[None, :] + max_shift + offsets[:, :1])   # (N, H)
    cols = xp.asarray(np.arange(w)[None, :] + max_shift + offsets[:, 1:])   # (N, W)
    batch = xp.arange(n)[:, None, None]
    return xp.stack([padded[batch, ch, rows[:, :, None], cols[:, None, :]] for ch in range(c)], axis=1)


def shift_offsets(rng: np.random.Generator, count: int, max_shift: int) -> np.ndarray:
    """(count, 2) random (dy, dx) in [-max_shift, max_shift]: one batch's shifts, drawn as
    ``BatchIterator`` and ``gpucnn.cuda_graph.GraphedStep`` both draw them (one call per batch)."""
    return rng.integers(-max_shift, max_shift + 1, size=(count, 2))


def shard_slice(count: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous part of ``count`` items, cut as ``numpy.array_split`` cuts them
    (the first ``count % world_size`` ranks get one more); the parts in rank order make up the whole."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _label_range(labels: np.ndarray) -> tuple[int, int] | None:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.size == 0:
        return None
    return int(labels.min()), int(labels.max())


def as_array(data: Any, owner: str, name: str, backend: Any = None, kinds: str = "biuf",
             expected: str = "numbers") -> Any:
    """``data`` as an array: a NumPy array, or an array ``backend`` computes on, as it is; anything
    else (a list, a tuple) converted once with ``np.asarray``. Refuses, with a TypeError naming
    ``owner`` and ``name``, what NumPy cannot make one array of, a 0-d array, and a dtype whose
    kind is not in ``kinds`` (NumPy's codes: b bool, i/u integers, f floats)."""
    if not (isinstance(data, np.ndarray) or (backend is not None and backend.owns(data))):
        try:
            data = np.asarray(data)
        except (TypeError, ValueError) as exc:  # ragged nesting, or things that are no numbers
            raise TypeError(f"{owner}: {name} must be an array (or nested lists) of {expected} of one shape, got "
                            f"a {type(data).__name__} NumPy cannot make one array of ({exc})") from None
    dtype = np.dtype(data.dtype)
    if dtype.kind not in kinds:
        raise TypeError(f"{owner}: {name} must be {expected}, got an array of dtype {dtype}")
    if data.ndim == 0:
        raise TypeError(f"{owner}: {name} must be an array with one entry per sample, got a 0-d array")
    return data


def check_label_range(labels: Any, classes: int, owner: str, name: str = "labels",
                      label_range: tuple[int, int] | None = None, source: str | None = None) -> None:
    """Every label in [0, ``classes``), else a ValueError naming the first one outside and its value
    (and ``source``, where the class count came from, in parentheses).

    One vectorised pass over the host array ``labels`` (its (min, max) ``label_range``, when known
    already, answers without one); the index is only looked for once the range is known to be wrong."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{owner}: {name} must be integers (class indices), got dtype {labels.dtype}")
    if label_range is None:
        label_range = _label_range(labels)
    if label_range is None or (label_range[0] >= 0 and label_range[1] < classes):
        return
    bad = np.flatnonzero((labels < 0) | (labels >= classes))[0]
    index = ", ".join(str(int(i)) for i in np.unravel_index(bad, labels.shape))
    note = f" ({source})" if source else ""
    raise ValueError(f"{owner}: labels must lie in [0, {classes}){note}; {name}[{index}] is {labels.reshape(-1)[bad]}")


class BatchIterator:
    """Shuffled mini-batches of (images, labels) on a backend.

    With ``resident=True`` the whole set is copied to the backend once and batches are
    gathered there (what a GPU wants); otherwise each batch is gathered on the host and moved.

    With ``world_size`` > 1 (``gpucnn.distributed``), ``batch_size`` is the global batch: every rank
    draws the same permutation (give each the same ``rng`` seed), cuts the same global batches and
    keeps its contiguous part of each (``shard_slice``), so the ranks' parts are disjoint and
    together are the batch one process would see, shifts included. A last batch with fewer images
    than ranks is dropped. ``batch_weight`` is then the last batch's share on this rank over an even
    share: scaling the rank's mean loss by it makes averaged gradients those of the global batch.

    ``images`` and ``labels`` may be any array-likes (nested lists too): they are converted once,
    with ``np.asarray``, and must hold numbers. ``classes`` (or ``check_labels`` later) checks that
    every label is a class index in [0, classes), naming the first that is not.
    """

    def __init__(self, images: Any, labels: Any, batch_size: int, backend: Any,
                 shuffle: bool = True, rng: np.random.Generator | None = None, drop_last: bool = False,
                 resident: bool = False, max_shift: int = 0, rank: int = 0, world_size: int = 1,
                 classes: int | None = None) -> None:
        images = as_array(images, "BatchIterator", "images", backend)
        # float targets are allowed (other losses than cross-entropy); class labels are checked by check_labels
        labels = as_array(labels, "BatchIterator", "labels", backend, kinds="iuf",
                          expected="integers (class indices) or floats")
        if len(images) != len(labels):
            raise ValueError(f"BatchIterator: {len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"BatchIterator: batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size or batch_size < world_size:
            raise ValueError(f"BatchIterator: needs 0 <= rank < world_size <= batch_size, got rank {rank}, "
                             f"world_size {world_size}, batch_size {batch_size}")
        self.rank, self.world_size, self.batch_weight = rank, world_size, 1.0
        self.backend, self.batch_size, self.shuffle = backend, int(batch_size), shuffle
        self.rng = rng if rng is not None else np.random.default_rng()
        self.drop_last, self.resident, self.max_shift = drop_last, resident, max_shift
        self.images = backend.asarray(images) if resident else images
        self.labels = backend.asarray(labels) if resident else labels
        self.count = len(images)
        #: what random shifts fill with (a 0-d array where the images are; None without shifts)
        self.background = self.images.min() if max_shift > 0 and self.count else None
        #: (smallest, largest) label, found here once so that no training step has to copy its labels
        #: back to check their range (``train_epoch`` compares it with the number of classes); None
        #: when the labels are not integers or there are none
        host_labels = labels if isinstance(labels, np.ndarray) else backend.to_numpy(labels)
        self.label_range = _label_range(host_labels)
        # kept (the caller's array, or the copy just made) so that a bad label can be named without a device read
        self._host_labels = host_labels
        if classes is not None:
            self.check_labels(classes, source=f"classes={classes}")

    def check_labels(self, classes: int, name: str = "labels", source: str | None = None) -> None:
        """Every label in [0, ``classes``), else a ValueError naming the first outside (as ``name[i]``),
        its value and ``source`` (where ``classes`` came from); a TypeError for labels that are no
        integers. Reads nothing from the device."""
        check_label_range(self._host_labels, classes, "BatchIterator", name, self.label_range, source)

    def __len__(self) -> int:
        full, rest = divmod(self.count, self.batch_size)
        return full + (1 if rest >= self.world_size and not self.drop_last else 0)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = self.rng.permutation(self.count) if self.shuffle else np.arange(self.count)
        xp = self.backend.xp if self.resident else np
        if self.resident:
            order = self.backend.asarray(order)
        for start in range(0, self.count, self.batch_size):
            index = order[start:start + self.batch_size]
            if len(index) < self.batch_size and (self.drop_last or len(index) < self.world_size):
                break
            if self.world_size > 1:
                yield self._part(index, xp)
                continue
            x, y = self.images[index], self.labels[index]
            if self.max_shift:
                x = random_shift(x, self.max_shift, self.rng, xp, background=self.background)
            if not self.resident:
                x, y = self.backend.asarray(x), self.backend.asarray(y)
            yield x, y

    def _part(self, index: Any, xp: Any) -> tuple[Any, Any]:
        """This rank's part of one global batch; the shifts are drawn for the whole batch, as one process would."""
        part = shard_slice(len(index), self.rank, self.world_size)
        self.batch_weight = (part.stop - part.start) * self.world_size / len(index)
        local = index[part]
        x, y = self.images[local], self.labels[local]
        if self.max_shift:
            offsets = shift_offsets(self.rng, len(index), self.max_shift)[part]
            x = random_shift(x, self.max_shift, self.rng, xp, offsets, self.background)
        if not self.resident:
            x, y = self.backend.asarray(x), self.backend.asarray(y)
        return x, y
