"""Data sets for training and accuracy reports: the built-in digits and local 28x28 IDX files.

Images come back as float32 arrays ``(N, 1, H, W)`` scaled to ``[0, 1]`` and labels as int64
``(N,)``. Nothing is downloaded: the digits ship inside scikit-learn, and MNIST-like sets are read
from a folder the user gives. :func:`quantize.quantize_images` maps these images onto the integer
activation grid the golden model and the hardware take.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "DataError", "IDX_FILES", "load_digits_split", "load_idx_dir", "read_idx",
           "load_dataset"]

#: The standard MNIST file names (each may also be gzipped, with ``.gz`` appended).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: The digits split: a fixed seed so every run, test and shipped model sees the same test images.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class DataError(ValueError):
    """A data set that cannot be read: the message names the file and what is wrong."""


@dataclass
class Dataset:
    """A train/test split: images ``(N, 1, H, W)`` float32 in ``[0, 1]``, labels int64."""
    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int = 10

    @property
    def input_shape(self):
        return tuple(self.train_x.shape[1:])


def load_digits_split():
    """scikit-learn's 8x8 digits (1797 images, values 0..16) with a fixed stratified 80/20 split:
    1437 training and 360 test images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y)
    return Dataset("digits", np.ascontiguousarray(train_x), train_y, np.ascontiguousarray(test_x), test_y)


def read_idx(path):
    """One IDX file (gzipped or not) as a NumPy array of unsigned bytes.

    Only the unsigned-byte type (0x08) is accepted: MNIST and its look-alikes use it.
    """
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: broken gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (the magic number must start with two zero bytes)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX element type 0x{raw[2]:02x} is not supported (only unsigned bytes, 0x08)")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header is truncated ({ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    data = raw[4 + 4 * ndim:]
    if len(data) != size:
        raise DataError(f"{path}: the header promises {size} bytes of shape {shape}, the file holds {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _find(folder, stem):
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    # A common alternative spelling: "train-images.idx3-ubyte".
    alt = stem.replace("-idx", ".idx")
    for name in (alt, alt + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: missing {stem} (or {stem}.gz); an IDX data set folder holds "
                    f"{', '.join(IDX_FILES.values())}")


def load_idx_dir(folder, *, classes=10):
    """MNIST or any IDX set of 28x28 (any HxW) images from ``folder``: the four standard files."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (give 'digits' or a folder of IDX files)")
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        where = _find(folder, IDX_FILES[f"{split}_images"])
        if images.ndim != 3:
            raise DataError(f"{where}: images must have 3 dimensions (N, H, W), not shape {images.shape}")
        if labels.ndim != 1:
            raise DataError(f"{_find(folder, IDX_FILES[f'{split}_labels'])}: labels must have 1 dimension, "
                            f"not shape {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
        if images.shape[0] == 0:        # nothing to calibrate on, or to measure accuracy with
            raise DataError(f"{where}: holds no images")
        if labels.size and labels.max() >= classes:
            raise DataError(f"{_find(folder, IDX_FILES[f'{split}_labels'])}: label {labels.max()} is not "
                            f"below {classes}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"{folder}: training images {arrays['train_images'].shape[1:]} and test images "
                        f"{arrays['test_images'].shape[1:]} differ in size")
    scale = lambda a: (a.astype(np.float32) / 255.0)[:, None, :, :]
    return Dataset(folder.name or str(folder), scale(arrays["train_images"]),
                   arrays["train_labels"].astype(np.int64), scale(arrays["test_images"]),
                   arrays["test_labels"].astype(np.int64), classes)


def load_dataset(name):
    """``"digits"`` or a folder of IDX files."""
    if not isinstance(name, (str, pathlib.Path)):
        raise TypeError(f"Data set must be 'digits' or a folder path, not {name!r}")
    if str(name) == "digits":
        return load_digits_split()
    return load_idx_dir(name)
