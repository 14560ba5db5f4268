"""Datasets: one loader shared by the CLI, the scripts and the benchmarks.

``load_dataset(name)`` returns a :class:`Dataset` of float32 images in [0, 1] and int64
labels for

- ``"digits"``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download),
  64 features divided by 16, split by :func:`digits_split` into 1,437 training and 360
  test images, stratified by class, the same on every machine.
- ``"mnist"`` / ``"fashion-mnist"``: the original idx files (28x28 images, 60,000 training
  and 10,000 test), read from a directory and checked against SHA-256 digests embedded
  below. The digests of the decompressed idx payloads are checked too, so repackaged
  gzip files (Debian's ``dataset-fashion-mnist`` strips the gzip header, which changes
  the digest of the ``.gz`` but not of its content) and already decompressed idx files
  are accepted.

Images come flattened to (N, D) by default; ``load_dataset(..., images=True)`` keeps their
shape, (N, C, H, W) with C = 1 (:data:`IMAGE_SHAPES`), for networks whose input layer is
an image (a view of the same C-contiguous data, so both layouts hold the same values).

Nothing is downloaded and nothing is cached next to the data (data directories may be
read-only); decoding the 60,000 MNIST images takes well under a second.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ConfigError, DataError
from .registry import Registry

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "SYSTEM_DATA_DIRS",
    "DIGITS_SPLIT_SEED",
    "DIGITS_N_TEST",
    "IMAGE_SHAPES",
    "Dataset",
    "load_dataset",
    "load_recorded_dataset",
    "digits_split",
    "read_idx",
    "one_hot",
    "iterate_minibatches",
]

log = logging.getLogger(__name__)

#: Environment variable naming a data directory, searched when ``data_dir`` is None.
DATA_DIR_ENV = "NEURO_HTS_DATA_DIR"
#: System directories searched last, each with one sub-directory per dataset
#: (Debian's ``dataset-fashion-mnist`` installs into /usr/share/datasets/fashion-mnist).
SYSTEM_DATA_DIRS = ("/usr/share/datasets", "/usr/local/share/datasets")

#: (C, H, W) of each dataset's images (grey levels: one channel)
IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28)}

#: Seed and test-set size of the fixed stratified split of the digits dataset.
DIGITS_SPLIT_SEED = 20240229
DIGITS_N_TEST = 360


@dataclass(frozen=True)
class _IdxFile:
    name: str  # file name of the idx file, without ".gz"
    sha256_gz: str  # digest of the .gz as distributed by the dataset's authors
    sha256_idx: str  # digest of the decompressed idx payload
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _IdxDataset:
    train_images: _IdxFile
    train_labels: _IdxFile
    test_images: _IdxFile
    test_labels: _IdxFile
    n_classes: int
    source: str  # where to get the files, for error messages

    def files(self) -> tuple[_IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


_IDX_DATASETS: dict[str, _IdxDataset] = {
    "mnist": _IdxDataset(
        train_images=_IdxFile(
            "train-images-idx3-ubyte",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            (60000, 28, 28),
        ),
        train_labels=_IdxFile(
            "train-labels-idx1-ubyte",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            (60000,),
        ),
        test_images=_IdxFile(
            "t10k-images-idx3-ubyte",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            (10000, 28, 28),
        ),
        test_labels=_IdxFile(
            "t10k-labels-idx1-ubyte",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            (10000,),
        ),
        n_classes=10,
        source="get them from Yann LeCun's MNIST page (yann.lecun.com/exdb/mnist) or a mirror of it",
    ),
    "fashion-mnist": _IdxDataset(
        train_images=_IdxFile(
            "train-images-idx3-ubyte",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            (60000, 28, 28),
        ),
        train_labels=_IdxFile(
            "train-labels-idx1-ubyte",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            (60000,),
        ),
        test_images=_IdxFile(
            "t10k-images-idx3-ubyte",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            (10000, 28, 28),
        ),
        test_labels=_IdxFile(
            "t10k-labels-idx1-ubyte",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            (10000,),
        ),
        n_classes=10,
        source=(
            "get them from Zalando Research's Fashion-MNIST repository "
            "(github.com/zalandoresearch/fashion-mnist) or install Debian's dataset-fashion-mnist "
            "package (files in /usr/share/datasets/fashion-mnist)"
        ),
    ),
}

#: Datasets accepted by :func:`load_dataset`: "digits" (scikit-learn's 8 x 8 digits,
#: embedded) and the idx datasets above (their file descriptions).
DATASETS: Registry = Registry("dataset", describe=lambda d: d if isinstance(d, str) else f"idx files, {d.n_classes} classes")
DATASETS.register("digits", "scikit-learn's embedded 8x8 digits (1,797 images, 10 classes)")
for _name, _spec in _IDX_DATASETS.items():
    DATASETS.register(_name, _spec)


# --------------------------------------------------------------------------- Dataset


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset with a fixed train/test split.

    Attributes
    ----------
    name : str
    x_train : ndarray, shape (N_train, D) or (N_train, C, H, W), float32 in [0, 1], C-contiguous, read-only
    y_train : ndarray, shape (N_train,), int64 in [0, n_classes)
    x_test : ndarray, shape (N_test, D) or (N_test, C, H, W), float32 in [0, 1], C-contiguous, read-only
    y_test : ndarray, shape (N_test,), int64 in [0, n_classes)
    n_classes : int

    :func:`load_dataset` marks the arrays read-only because one Dataset may be shared by
    several consumers; take a copy to modify them. Equality is identity (arrays have no
    single truth value).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    def __post_init__(self):
        for part in ("train", "test"):
            x = getattr(self, f"x_{part}")
            y = getattr(self, f"y_{part}")
            if x.dtype != np.float32 or x.ndim not in (2, 4) or not x.flags.c_contiguous:
                raise DataError(f"{self.name}: x_{part} must be a C-contiguous (N, D) or (N, C, H, W) float32 array")
            if y.dtype != np.int64 or y.shape != (x.shape[0],):
                raise DataError(f"{self.name}: y_{part} must be int64 of shape ({x.shape[0]},), got {y.dtype} {y.shape}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"{self.name}: train and test have different feature counts")

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(D,) or (C, H, W): the shape of one sample."""
        return tuple(int(v) for v in self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


# --------------------------------------------------------------------------- loading


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    *,
    images: bool = False,
) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`).

    Parameters
    ----------
    name : {"digits", "mnist", "fashion-mnist"}
    data_dir : path, optional
        For MNIST and Fashion-MNIST: a directory holding the four idx files
        (``train-images-idx3-ubyte.gz`` ...), or a parent directory with a sub-directory
        named after the dataset. If None, the directory in ``$NEURO_HTS_DATA_DIR`` is used,
        then :data:`SYSTEM_DATA_DIRS`. Ignored for ``"digits"``.
    n_train, n_test : int, optional
        Keep only the first ``n_train`` training / ``n_test`` test samples.
    images : bool
        Keep the image shape: x is (N, C, H, W) (:data:`IMAGE_SHAPES`) instead of (N, D).

    Returns
    -------
    Dataset
        Images flattened to (N, D) (or (N, C, H, W) with ``images``) float32 in [0, 1]
        (pixel / 255, digits / 16), labels int64.

    Raises
    ------
    DataError
        Unknown name; missing, corrupt, foreign or malformed files.
    ConfigError
        ``n_train`` / ``n_test`` not a positive integer or larger than the split.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    n_train = _check_count("n_train", n_train)
    n_test = _check_count("n_test", n_test)
    if name == "digits":
        x_tr, y_tr, x_te, y_te, n_classes = _load_digits()
    else:
        x_tr, y_tr, x_te, y_te, n_classes = _load_idx_dataset(name, data_dir)
    x_tr, y_tr = _take_first(name, "n_train", "training", x_tr, y_tr, n_train)
    x_te, y_te = _take_first(name, "n_test", "test", x_te, y_te, n_test)
    scale = 16.0 if name == "digits" else 255.0
    arrays = [
        _to_unit_float(x_tr, scale),
        np.array(y_tr, dtype=np.int64),  # a copy: never a view of the full label array
        _to_unit_float(x_te, scale),
        np.array(y_te, dtype=np.int64),
    ]
    if images:
        arrays[0] = arrays[0].reshape(len(arrays[0]), *IMAGE_SHAPES[name])
        arrays[2] = arrays[2].reshape(len(arrays[2]), *IMAGE_SHAPES[name])
    for a in arrays:
        a.flags.writeable = False
    return Dataset(name, *arrays, n_classes=n_classes)


def _check_count(label: str, n) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"{label} must be a positive integer, got {n!r}")
    return int(n)


def _take_first(name, label, part, x, y, n):
    if n is None:
        return x, y
    if n > len(y):
        raise ConfigError(f"{label} = {n} exceeds the {len(y)} {part} samples of {name}")
    return x[:n], y[:n]


def _to_unit_float(x: np.ndarray, scale: float) -> np.ndarray:
    """(N, ...) raw values in [0, scale] -> (N, D) C-contiguous float32 in [0, 1]."""
    x = x.reshape(len(x), -1)
    out = np.empty(x.shape, dtype=np.float32)
    np.divide(x, np.float32(scale), out=out, casting="unsafe")  # correctly rounded x / scale
    return out


# --------------------------------------------------------------------------- digits


def digits_split(y: np.ndarray, n_test: int = DIGITS_N_TEST, seed: int = DIGITS_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of labels ``y`` into sorted (train_idx, test_idx).

    Class c gets round(n_test * count_c / N) test samples (largest remainder, so the test
    set has exactly ``n_test``); which samples is decided by one permutation per class
    from ``np.random.default_rng(seed)``, classes in increasing order. With the defaults
    on scikit-learn's 1,797 digits: 1,437 train / 360 test, 34-37 test images per class.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    quota = n_test * counts / counts.sum()
    n_test_c = np.floor(quota).astype(np.int64)
    short = n_test - int(n_test_c.sum())
    # stable sort: ties go to the lower class, independent of platform
    n_test_c[np.argsort(-(quota - n_test_c), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    test = []
    for c, k in zip(classes, n_test_c):
        idx = np.flatnonzero(y == c)
        test.append(idx[rng.permutation(len(idx))[:k]])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from exc
    bunch = load_digits()
    x = np.asarray(bunch.data)
    y = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = digits_split(y)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10


def load_recorded_dataset(name: str, recorded_dir, override_dir=None, **kwargs) -> Dataset:
    """Load the dataset a run file recorded, even after its files moved.

    ``override_dir`` (a user's ``--data-dir``) wins. Otherwise the recorded directory is
    tried first; when it no longer holds the files, the usual search (``$NEURO_HTS_DATA_DIR``,
    then :data:`SYSTEM_DATA_DIRS`) is used instead. This is safe because every idx file is
    checksum-verified: whatever directory it comes from, it is the same data.
    """
    if override_dir is not None or recorded_dir is None or name == "digits":
        return load_dataset(name, override_dir if override_dir is not None else recorded_dir, **kwargs)
    try:
        return load_dataset(name, recorded_dir, **kwargs)
    except DataError as first:
        try:
            data = load_dataset(name, None, **kwargs)
        except DataError:
            raise first from None
        log.info("%s: the recorded data_dir %s no longer holds the files; using the verified copy found via "
                 "$%s or the system directories", name, recorded_dir, DATA_DIR_ENV)
        return data


# --------------------------------------------------------------------------- idx files


def _candidate_dirs(name: str, data_dir) -> list[Path]:
    if data_dir is not None:
        roots = [Path(data_dir)]
    else:
        roots = []
        env = os.environ.get(DATA_DIR_ENV)
        if env:
            roots.append(Path(env))
        roots += [Path(p) for p in SYSTEM_DATA_DIRS]
    dirs = []
    for root in roots:
        root = root.expanduser()
        # a root holding <name>/ first, then the directory itself
        for d in (root / name, root):
            if d not in dirs:
                dirs.append(d)
    return dirs


def _find_file(directory: Path, f: _IdxFile) -> Path | None:
    for candidate in (directory / f"{f.name}.gz", directory / f.name):
        if candidate.is_file():
            return candidate
    return None


def _locate(name: str, spec: _IdxDataset, data_dir) -> list[Path]:
    """The four files, all from the first candidate directory holding all of them."""
    dirs = _candidate_dirs(name, data_dir)
    for d in dirs:
        paths = [_find_file(d, f) for f in spec.files()]
        if all(p is not None for p in paths):
            return paths
    for d in dirs:  # a directory holding some files: name the missing ones there
        paths = [_find_file(d, f) for f in spec.files()]
        if any(p is not None for p in paths):
            missing = [f"{f.name}.gz" for f, p in zip(spec.files(), paths) if p is None]
            raise DataError(
                f"{name}: {d} lacks {', '.join(missing)}; {spec.source}, "
                f"then pass --data-dir (or set {DATA_DIR_ENV})"
            )
    expected = ", ".join(f"{f.name}.gz" for f in spec.files())
    searched = ", ".join(str(d) for d in dirs)
    raise DataError(
        f"{name} files not found (searched {searched}); expected {expected}; "
        f"{spec.source}, then pass --data-dir DIR (or set {DATA_DIR_ENV})"
    )


def _load_idx_dataset(name: str, data_dir):
    spec = _IDX_DATASETS[name]
    paths = _locate(name, spec, data_dir)
    log.debug("loading %s from %s", name, paths[0].parent)
    arrays = [_read_verified(name, p, f) for p, f in zip(paths, spec.files())]
    x_tr, y_tr, x_te, y_te = arrays
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), spec.n_classes


def _known_as(digest: str) -> str | None:
    """'<dataset> <file>' if ``digest`` is that of another known file, else None."""
    for ds_name, spec in _IDX_DATASETS.items():
        for f in spec.files():
            if digest in (f.sha256_gz, f.sha256_idx):
                return f"{ds_name} {f.name}"
    return None


def _read_verified(dataset: str, path: Path, f: _IdxFile) -> np.ndarray:
    """Read ``path``, check its digest against ``f``, parse it and check its shape."""
    raw = _read_bytes(path)
    digest = hashlib.sha256(raw).hexdigest()
    if digest == f.sha256_gz:
        payload = _gunzip(path, raw)
    elif digest == f.sha256_idx:
        payload = raw
    else:
        # A repackaged .gz (other gzip header, same content) is fine: check the content.
        payload, what = None, "the file is corrupt or a different version"
        if _is_gzip(raw):
            try:
                payload = _gunzip(path, raw)
            except DataError:
                what = "the file is corrupt or truncated (not a valid gzip stream)"
        payload_digest = None if payload is None else hashlib.sha256(payload).hexdigest()
        if payload_digest != f.sha256_idx:
            other = _known_as(digest if payload_digest is None else payload_digest)
            if other:
                what = f"it holds the {other} file"
            raise DataError(f"{path}: SHA-256 checksum mismatch for the {dataset} {f.name} file: {what}")
    arr = _parse_idx(path, payload)
    if arr.shape != f.shape:  # pragma: no cover - impossible once the digest matched
        raise DataError(f"{path}: shape {arr.shape}, expected {f.shape}")
    return arr


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _is_gzip(raw: bytes) -> bool:
    return raw[:2] == b"\x1f\x8b"


def _gunzip(path: Path, raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: not a valid gzip file (truncated or corrupt: {exc})") from exc


_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one idx file (gzip-compressed or not) into an array in native byte order.

    The idx format: 2 zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte giving the number of dimensions d,
    d big-endian uint32 sizes, then the values, big-endian, in C order.
    No checksum is verified; :func:`load_dataset` does that for the known datasets.

    Raises DataError naming the file if it is unreadable, not valid gzip, has a bad magic
    number, or is shorter or longer than its header says.
    """
    path = Path(path)
    raw = _read_bytes(path)
    return _parse_idx(path, _gunzip(path, raw) if _is_gzip(raw) else raw)


def _parse_idx(path: Path, buf: bytes) -> np.ndarray:
    if len(buf) < 4:
        raise DataError(f"{path}: not an idx file (only {len(buf)} bytes)")
    zero0, zero1, type_code, ndim = buf[0], buf[1], buf[2], buf[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: not an idx file (bad magic number 0x{buf[:4].hex()})")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: truncated idx header ({len(buf)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buf) != expected:
        state = "truncated" if len(buf) < expected else "has trailing bytes"
        raise DataError(f"{path}: idx file {state} ({len(buf)} bytes, header {shape} implies {expected})")
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


# --------------------------------------------------------------------------- helpers


def one_hot(labels, n_classes: int, dtype=np.float32) -> np.ndarray:
    """(N,) integer labels in [0, n_classes) -> (N, n_classes) one-hot array of ``dtype``."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ConfigError(f"n_classes must be a positive integer, got {n_classes!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"labels must lie in [0, {n_classes}), got range [{labels.min()}, {labels.max()}]")
    out = np.zeros((labels.shape[0], int(n_classes)), dtype=dtype)
    out[np.arange(labels.shape[0]), labels.astype(np.intp, copy=False)] = 1
    return out


def iterate_minibatches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x[idx], y[idx])`` batches covering every sample exactly once.

    Parameters
    ----------
    x : ndarray, shape (N, ...)
    y : ndarray, shape (N, ...)
    batch_size : int
        The last batch holds the remaining ``N % batch_size`` samples if that is nonzero.
    rng : numpy.random.Generator or None
        Shuffles the order (one permutation per call); None keeps the original order
        (evaluation).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    n = len(x)
    if len(y) != n:
        raise DataError(f"x has {n} samples but y has {len(y)}")
    if rng is None:
        for start in range(0, n, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def normalize(data: Dataset, mean_std) -> Dataset:
    """x <- (x - mean) / std for both splits (``mean_std`` None: ``data`` itself), read-only float32."""
    if mean_std is None:
        return data
    mean, std = (float(v) for v in mean_std)
    arrays = []
    for a in (data.x_train, data.x_test):
        b = ((a - np.float32(mean)) / np.float32(std)).astype(np.float32)
        b.flags.writeable = False
        arrays.append(b)
    return Dataset(data.name, arrays[0], data.y_train, arrays[1], data.y_test, n_classes=data.n_classes)
