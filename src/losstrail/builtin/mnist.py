"""MNIST from the standard IDX files: read (gzip or not), checked, downloaded only when missing."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_mnist", "read_idx"]

IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
# The MD5 of each gzip file as published with the dataset (the sums torchvision checks too).
MD5 = {f"{IMAGES}.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873", f"{LABELS}.gz": "d53e105ee54ea40749a09fcbcd1e9432"}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
# IDX magic numbers: 0x0000 then the element type (0x08, unsigned byte) and the number of dimensions.
MAGIC = {IMAGES: 0x00000803, LABELS: 0x00000801}
MEAN, STD = 0.1307, 0.3081


def default_dir() -> Path:
    root = os.environ.get("LOSSTRAIL_DATA")
    return Path(root) / "mnist" if root else Path.home() / ".cache" / "losstrail" / "mnist"


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """The array in an IDX file (``.gz`` or plain), checked against its header.

    >>> import tempfile, struct
    >>> p = Path(tempfile.mkdtemp()) / "labels"
    >>> _ = p.write_bytes(struct.pack(">II", 0x801, 3) + bytes([7, 0, 9]))
    >>> read_idx(p).tolist()
    [7, 0, 9]
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 8:
        raise ValueError(f"{path} is not an IDX file: {len(raw)} bytes is shorter than its header")
    magic = int.from_bytes(raw[:4], "big")
    if (magic >> 8) != 0x08 or (expected_magic is not None and magic != expected_magic):
        expected = f"0x{expected_magic:08x}" if expected_magic is not None else "0x000008NN"
        raise ValueError(
            f"{path} has magic number 0x{magic:08x}, expected {expected}; it is not the MNIST file it is named "
            "after (or it is corrupt). Delete it to fetch it again"
        )
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    start, size = 4 + 4 * ndim, int(np.prod(shape))
    if len(raw) != start + size:
        raise ValueError(
            f"{path} should hold {size} bytes of data for shape {shape} but holds {len(raw) - start}; "
            "it is truncated or corrupt. Delete it to fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(folder: Path, name: str) -> Path:
    """Fetch ``name``.gz into ``folder``, verifying its MD5; raise OSError when no mirror answers."""
    import urllib.request

    from losstrail._files import atomic_path

    target, errors = folder / f"{name}.gz", []
    for mirror in MIRRORS:
        try:
            with urllib.request.urlopen(mirror + target.name, timeout=20) as response:
                data = response.read()
        except OSError as err:
            errors.append(f"{mirror}: {err}")
            continue
        digest = hashlib.md5(data).hexdigest()
        if digest != MD5[target.name]:
            errors.append(f"{mirror}: checksum {digest} is not {MD5[target.name]}")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        return target
    raise OSError("; ".join(errors))


def load_mnist(data_dir=None, *, n_examples: int | None = 3000, download: bool = True):
    """The first ``n_examples`` MNIST training images (N, 1, 28, 28), normalized, and their labels (N,).

    Reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (or their ``.gz``)
    from ``data_dir``; missing files are downloaded (MD5 checked) when ``download`` and the
    network allows, else the error says where to put them.
    """
    folder = Path(data_dir) if data_dir is not None else default_dir()
    paths = {}
    for name in (IMAGES, LABELS):
        found = _find(folder, name)
        if found is None and download:
            try:
                found = _download(folder, name)
            except OSError as err:
                raise FileNotFoundError(
                    f"MNIST file {name}(.gz) is not in {str(folder)!r} and could not be downloaded ({err}). "
                    f"Put train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz in {str(folder)!r} "
                    "(or pass data_dir=...) and run again"
                ) from None
        if found is None:
            raise FileNotFoundError(
                f"MNIST file {name}(.gz) is not in {str(folder)!r}; put it there, pass data_dir=..., or download=True"
            )
        paths[name] = found
    images = read_idx(paths[IMAGES], MAGIC[IMAGES])
    labels = read_idx(paths[LABELS], MAGIC[LABELS])
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            f"{paths[IMAGES]} holds {images.shape[0]} images but {paths[LABELS]} holds {len(labels)} labels; "
            "they are not a matching pair"
        )
    if n_examples is not None:
        images, labels = images[:n_examples], labels[:n_examples]
    X = (torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1) - MEAN) / STD
    return X, torch.from_numpy(labels.astype(np.int64))
