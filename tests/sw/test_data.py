"""Data sets: the built-in digits split and IDX folders (small files made here), with their errors."""

import gzip

import numpy as np
import pytest

from addershift.sw.data import (IDX_FILES, DataError, load_dataset, load_digits_split, load_idx_dir,
                                read_idx)


def idx_bytes(array, *, type_code=0x08):
    array = np.asarray(array, dtype=np.uint8)
    head = bytes([0, 0, type_code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return head + array.tobytes()


def write_idx_set(folder, *, n_train=12, n_test=5, size=28, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, size, size)),
        "train_labels": rng.integers(0, 10, n_train),
        "test_images": rng.integers(0, 256, (n_test, size, size)),
        "test_labels": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


def test_digits_split_is_fixed_and_stratified():
    a, b = load_digits_split(), load_digits_split()
    assert a.train_x.shape == (1437, 1, 8, 8) and a.test_x.shape == (360, 1, 8, 8)
    assert a.train_x.dtype == np.float32 and a.train_y.dtype == np.int64
    assert 0.0 <= a.train_x.min() and a.train_x.max() == 1.0
    np.testing.assert_array_equal(a.test_x, b.test_x)
    np.testing.assert_array_equal(a.test_y, b.test_y)
    assert np.bincount(a.test_y).min() >= 35          # every class in the test split
    assert a.input_shape == (1, 8, 8) and load_dataset("digits").name == "digits"


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trip(tmp_path, gz):
    arrays = write_idx_set(tmp_path / "mnist", gz=gz)
    data = load_dataset(str(tmp_path / "mnist"))
    assert data.train_x.shape == (12, 1, 28, 28) and data.test_x.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(data.train_x[:, 0], arrays["train_images"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.test_y, arrays["test_labels"])
    assert data.input_shape == (1, 28, 28)


def test_read_idx_shapes_and_alternative_names(tmp_path):
    (tmp_path / "train-images.idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 3, 4))))
    assert read_idx(tmp_path / "train-images.idx3-ubyte").shape == (2, 3, 4)


def test_missing_file_is_named(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)"):
        load_idx_dir(tmp_path)


def test_not_a_folder(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: not a folder \(give 'digits' or a folder of IDX files\)"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(TypeError, match="Data set must be 'digits' or a folder path, not 3"):
        load_dataset(3)


@pytest.mark.parametrize("raw, message", [
    (b"\x01\x02\x08\x01", "not an IDX file"),
    (b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00" * 4, "IDX element type 0x0d is not supported"),
    (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big"), "IDX header is truncated"),
    (idx_bytes(np.zeros((2, 4, 4)))[:-3], "the header promises 32 bytes of shape (2, 4, 4), the file holds 29"),
    (b"\x1f\x8b\x08garbage", "broken gzip data"),
    # a damaged deflate stream (zlib's own error, not an OSError)
    (gzip.compress(idx_bytes(np.arange(200).reshape(2, 10, 10)))[:10] + b"\xff" +
     gzip.compress(idx_bytes(np.arange(200).reshape(2, 10, 10)))[11:], "broken gzip data"),
])
def test_malformed_idx(tmp_path, raw, message):
    path = tmp_path / "f"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="f: " + message.replace("(", r"\(").replace(")", r"\)")):
        read_idx(path)


def test_inconsistent_sets(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / IDX_FILES["train_labels"]).write_bytes(idx_bytes(np.zeros(11)))
    with pytest.raises(DataError, match="12 images but 11 labels"):
        load_idx_dir(tmp_path)
    write_idx_set(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).write_bytes(idx_bytes(np.full(5, 12)))
    with pytest.raises(DataError, match="label 12 is not below 10"):
        load_idx_dir(tmp_path)
    write_idx_set(tmp_path)
    (tmp_path / IDX_FILES["test_images"]).write_bytes(idx_bytes(np.zeros((5, 20, 20))))
    with pytest.raises(DataError, match=r"training images \(28, 28\) and test images \(20, 20\) differ"):
        load_idx_dir(tmp_path)
    for split in ("train", "test"):       # an empty split: nothing to calibrate or measure on
        write_idx_set(tmp_path, **{f"n_{split}": 0})
        with pytest.raises(DataError, match=f"{IDX_FILES[split + '_images']}: holds no images$"):
            load_idx_dir(tmp_path)
    write_idx_set(tmp_path)
    (tmp_path / IDX_FILES["train_images"]).write_bytes(idx_bytes(np.zeros((12, 784))))
    with pytest.raises(DataError, match=r"images must have 3 dimensions \(N, H, W\), not shape \(12, 784\)"):
        load_idx_dir(tmp_path)
