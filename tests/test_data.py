"""Dataset loading (digits split, MNIST / Fashion-MNIST idx files), one_hot, minibatches."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from neuro_hts import config
from neuro_hts.data import (
    DATA_DIR_ENV,
    DATASETS,
    Dataset,
    digits_split,
    iterate_minibatches,
    load_dataset,
    one_hot,
    read_idx,
)
from neuro_hts.errors import ConfigError, DataError

SHARED_DATA = Path("/work/shared/data")
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _data_root() -> Path:
    for root in (os.environ.get(DATA_DIR_ENV), SHARED_DATA):
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(root)
    pytest.skip(f"MNIST files not available (set {DATA_DIR_ENV})")


@pytest.fixture(scope="module")
def data_root() -> Path:
    return _data_root()


@pytest.fixture(scope="module")
def mnist(data_root) -> Dataset:
    return load_dataset("mnist", data_root)


def _linked_copy(src: Path, dst: Path) -> Path:
    """dst/ holding symlinks to the four idx files in src/ (so one can be replaced)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in IDX_NAMES:
        (dst / f"{name}.gz").symlink_to(src / f"{name}.gz")
    return dst


def test_dataset_names_match_config():
    assert DATASETS == config.DATASETS


# ------------------------------------------------------------------ digits


def test_digits_shapes_range_and_split():
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.n_classes == 10
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.y_train.shape == (1437,) and ds.y_test.shape == (360,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.flags.c_contiguous and ds.x_test.flags.c_contiguous
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.x_test.min() >= 0.0 and ds.x_test.max() <= 1.0
    # stratified: every class has 35-37 test images (20 % of 174-183), 139-146 train
    assert np.bincount(ds.y_test, minlength=10).tolist() == [36, 37, 35, 37, 36, 36, 36, 36, 35, 36]
    assert np.bincount(ds.y_train, minlength=10).tolist() == [142, 145, 142, 146, 145, 146, 145, 143, 139, 144]


def test_digits_split_is_fixed_and_reproducible():
    from sklearn.datasets import load_digits

    raw = load_digits()
    train_idx, test_idx = digits_split(raw.target)
    # golden values: a change of the split (or of numpy's PCG64 stream) shows up here
    assert test_idx[:10].tolist() == [1, 3, 5, 12, 14, 15, 18, 23, 31, 35]
    assert int(test_idx.sum()) == 319723
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.array_equal(np.union1d(train_idx, test_idx), np.arange(1797))

    a, b = load_dataset("digits"), load_dataset("digits")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.x_test, (raw.data[test_idx] / 16).astype(np.float32))
    np.testing.assert_array_equal(a.y_train, raw.target[train_idx])


def test_digits_first_n_and_read_only():
    full = load_dataset("digits")
    ds = load_dataset("digits", n_train=100, n_test=20)
    assert ds.x_train.shape == (100, 64) and ds.x_test.shape == (20, 64)
    assert np.array_equal(ds.x_train, full.x_train[:100])
    assert np.array_equal(ds.y_test, full.y_test[:20])
    with pytest.raises(ValueError):
        ds.x_train[0, 0] = 0.5  # read-only


@pytest.mark.parametrize("kwargs", [{"n_train": 0}, {"n_test": -1}, {"n_train": 2.5}, {"n_train": 1438}])
def test_bad_counts(kwargs):
    with pytest.raises(ConfigError, match="n_t"):
        load_dataset("digits", **kwargs)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError, match="digits, mnist, fashion-mnist"):
        load_dataset("cifar10")


# ------------------------------------------------------------------ MNIST / Fashion-MNIST


def test_mnist(mnist):
    assert mnist.x_train.shape == (60000, 784) and mnist.x_test.shape == (10000, 784)
    assert mnist.x_train.dtype == np.float32 and mnist.y_test.dtype == np.int64
    assert mnist.x_train.flags.c_contiguous
    assert mnist.x_train.min() == 0.0 and mnist.x_train.max() == 1.0
    assert set(np.unique(mnist.y_train)) == set(range(10)) and mnist.n_classes == 10
    assert mnist.y_train[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert mnist.y_test[:5].tolist() == [7, 2, 1, 0, 4]
    # known pixel: row 5 of the first training image starts its stroke at column 12 (value 3)
    assert mnist.x_train[0].reshape(28, 28)[5, 12] == np.float32(3) / np.float32(255)
    assert np.bincount(mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_fashion_mnist(data_root):
    ds = load_dataset("fashion-mnist", data_root / "fashion-mnist", n_train=1000)
    assert ds.x_train.shape == (1000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.y_train[:5].tolist() == [9, 0, 0, 3, 0]
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert 0.0 <= ds.x_test.min() and ds.x_test.max() == 1.0


def test_data_dir_from_environment(data_root, tmp_path, monkeypatch, mnist):
    _linked_copy(data_root / "mnist", tmp_path / "mnist")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    ds = load_dataset("mnist", n_train=10, n_test=10)
    assert np.array_equal(ds.x_train, mnist.x_train[:10])


def test_repackaged_gzip_and_uncompressed_idx_are_accepted(data_root, tmp_path, mnist):
    d = _linked_copy(data_root / "mnist", tmp_path)
    # labels re-gzipped without file name / mtime (as Debian does): other .gz digest, same content
    src = data_root / "mnist" / "train-labels-idx1-ubyte.gz"
    (d / src.name).unlink()
    (d / src.name).write_bytes(gzip.compress(gzip.decompress(src.read_bytes()), mtime=0))
    assert (d / src.name).read_bytes() != src.read_bytes()
    # test labels already decompressed
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    (d / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress((data_root / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    ds = load_dataset("mnist", d, n_train=50)
    assert np.array_equal(ds.y_train, mnist.y_train[:50])
    assert np.array_equal(ds.y_test, mnist.y_test)


def test_missing_directory_names_files_and_sources(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_dataset("mnist", missing)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(missing) in msg
    for name in IDX_NAMES:
        assert f"{name}.gz" in msg
    assert "--data-dir" in msg and "MNIST" in msg

    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", missing)


def test_partial_directory_names_missing_file(data_root, tmp_path):
    d = _linked_copy(data_root / "mnist", tmp_path)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\.gz"):
        load_dataset("mnist", d)


def test_corrupt_file_fails_checksum(data_root, tmp_path):
    d = _linked_copy(data_root / "mnist", tmp_path)
    target = d / "train-images-idx3-ubyte.gz"
    raw = bytearray((data_root / "mnist" / target.name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.unlink()
    target.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum") as err:
        load_dataset("mnist", d)
    assert str(target) in str(err.value) and "corrupt" in str(err.value)


def test_truncated_gzip_fails(data_root, tmp_path):
    d = _linked_copy(data_root / "mnist", tmp_path)
    target = d / "train-labels-idx1-ubyte.gz"
    raw = (data_root / "mnist" / target.name).read_bytes()
    target.unlink()
    target.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        load_dataset("mnist", d)
    assert str(target) in str(err.value)


def test_files_of_the_other_dataset_are_named(data_root):
    with pytest.raises(DataError, match="holds the fashion-mnist train-images-idx3-ubyte file"):
        load_dataset("mnist", data_root / "fashion-mnist")


# ------------------------------------------------------------------ idx parser


def _idx_bytes(arr: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize(
    "dtype, code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)]
)
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path, dtype, code, compress):
    arr = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype) if dtype != np.uint8 else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    buf = _idx_bytes(arr, code)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    path.write_bytes(gzip.compress(buf) if compress else buf)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert np.array_equal(out, arr)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "bad magic"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "trailing"),
        (lambda b: b[:6], "truncated idx header"),
        (lambda b: b[:3], "not an idx file"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path, mutate, match):
    buf = _idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8), 0x08)
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(mutate(buf)))
    with pytest.raises(DataError, match=match) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_truncated_gzip(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.arange(1000, dtype=np.uint8) % 7, 0x08))[:40])
    with pytest.raises(DataError, match="not a valid gzip"):
        read_idx(path)


# ------------------------------------------------------------------ one_hot, minibatches


def test_one_hot():
    out = one_hot(np.array([2, 0, 1, 2]), 3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert one_hot([1], 4, dtype=np.float64).dtype == np.float64
    assert one_hot(np.array([], dtype=np.int64), 5).shape == (0, 5)
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        one_hot([0, 3], 3)
    with pytest.raises(DataError, match="integers"):
        one_hot([0.0, 1.0], 3)
    with pytest.raises(ConfigError):
        one_hot([0], 0)


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (5, 8), (1, 1)])
def test_minibatches_cover_each_sample_once(n, batch_size):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n)
    rng = np.random.default_rng(0)
    orders = []
    for _epoch in range(3):
        batches = list(iterate_minibatches(x, y, batch_size, rng))
        sizes = [len(yb) for _, yb in batches]
        assert sizes == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        seen = np.concatenate([yb for _, yb in batches])
        assert sorted(seen.tolist()) == list(range(n))
        for xb, yb in batches:  # x and y stay paired
            np.testing.assert_array_equal(xb[:, 0], 2 * yb)
        orders.append(seen)
    if n >= 10:
        assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch


def test_minibatches_reproducible_and_in_order_without_rng():
    x = np.arange(20).reshape(10, 2)
    y = np.arange(10)
    a = [yb.tolist() for _, yb in iterate_minibatches(x, y, 4, np.random.default_rng(7))]
    b = [yb.tolist() for _, yb in iterate_minibatches(x, y, 4, np.random.default_rng(7))]
    assert a == b
    assert [yb.tolist() for _, yb in iterate_minibatches(x, y, 4, None)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ConfigError):
        list(iterate_minibatches(x, y, 0, None))
    with pytest.raises(ConfigError):
        list(iterate_minibatches(x, y, 2, np.random.RandomState(0)))
    with pytest.raises(DataError):
        list(iterate_minibatches(x, y[:5], 2, None))
