"""Built-in datasets as data modules (Lightning's interface, without Lightning), and the loaders that feed them fast.

Every built-in dataset is small enough to live in memory as a ``TensorDataset``. Its
loaders draw each batch's indices as one tensor (a sampler of index tensors with
``batch_size=None``), so a batch is one indexing op per tensor: no per-sample indexing and
collation, which make a default ``DataLoader`` the slowest part of training a small model.

These classes have a LightningDataModule's methods (``prepare_data``, ``setup``,
``train_dataloader``) but do not import Lightning, so the default job runs without it.
``losstrail.SpiralsDataModule`` and the others exported by the package (and
``losstrail.datamodule``, for the reference's code) are the same data modules on
Lightning's ``LightningDataModule`` base, for a Lightning ``Trainer`` of your own.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from losstrail._registry import DATASETS, check_choice
from losstrail.evaluation.batches import batch_loader

__all__ = [
    "DigitsDataModule",
    "MNISTDataModule",
    "MoonsDataModule",
    "SpiralsDataModule",
    "built_datamodule",
    "make_datamodule",
    "make_moons",
    "make_spirals",
]


def make_spirals(n_per_class: int = 370, n_classes: int = 3, noise: float = 0.2, seed: int = 0):
    """Points on ``n_classes`` interleaved spiral arms in 2-D, the same for the same seed.

    Returns ``(X, y)``: float32 tensor ``(n_per_class * n_classes, 2)`` and int64 labels.

    >>> X, y = make_spirals()
    >>> tuple(X.shape), int(y.max()) + 1
    ((1110, 2), 3)
    """
    rng = np.random.default_rng(seed)
    radius = np.linspace(0.0, 1.0, n_per_class)
    xs, ys = [], []
    for k in range(n_classes):
        turn = 4.0 * 3.0 / n_classes  # about two thirds of a turn per arm for 3 classes
        angle = np.linspace(k * turn, (k + 1) * turn, n_per_class) + rng.normal(0.0, noise, n_per_class)
        xs.append(np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1))
        ys.append(np.full(n_per_class, k))
    X = torch.from_numpy(np.concatenate(xs).astype(np.float32))
    y = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    return X, y


class _InMemoryDataModule:
    """A labelled ``TensorDataset`` held in memory, served in shuffled batches (whole set by default).

    It answers as a LightningDataModule does (``prepare_data``, ``setup``, ``train_dataloader``)
    without being one; ``losstrail.datamodule`` puts Lightning's base under the same classes.
    """

    input_dim: int | tuple[int, ...]
    num_classes: int

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int | None, num_workers: int):
        super().__init__()
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer, or None for the whole set")
        self.batch_size = batch_size
        self.num_workers = num_workers
        # Built at once (not in setup) so that `datamodule.dataset.tensors` works as in the reference.
        self.dataset = TensorDataset(X, y)

    def prepare_data(self) -> None:
        """Nothing to fetch: the data is in memory."""

    def setup(self, stage: str | None = None) -> None:
        """Nothing to split: every example is for training."""

    @property
    def steps_per_epoch(self) -> int:
        size = len(self.dataset) if self.batch_size is None else self.batch_size
        return math.ceil(len(self.dataset) / size)

    @property
    def X(self) -> torch.Tensor:
        """The inputs (N, ...), as the reference's data modules held them."""
        return self.dataset.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        """The labels (N,)."""
        return self.dataset.tensors[1]

    def train_dataloader(self, num_workers: int | None = None) -> DataLoader:
        """Shuffled training batches; ``num_workers`` (as the reference took it) overrides the module's."""
        workers = self.num_workers if num_workers is None else num_workers
        return batch_loader(self.dataset, self.batch_size, shuffle=True, num_workers=workers)


class SpiralsDataModule(_InMemoryDataModule):
    """Three interleaved spirals in 2-D (1,110 points), generated in code, no file.

    Args:
        batch_size: examples per training step; ``None`` (default) is the whole set.
        n_per_class: points on each arm (default 370).
        noise: standard deviation of the angle noise (default 0.2).
        seed: seed of the generator that draws the points (default 0).
        num_workers: DataLoader workers (default 0).

    >>> dm = SpiralsDataModule()
    >>> dm.input_dim, dm.num_classes, len(dm.dataset)
    (2, 3, 1110)
    """

    input_dim = 2
    num_classes = 3

    def __init__(
        self,
        batch_size: int | None = None,
        n_per_class: int = 370,
        noise: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(*make_spirals(n_per_class, self.num_classes, noise, seed), batch_size, num_workers)
        self.recipe = {"name": "spirals", "batch_size": batch_size, "n_per_class": n_per_class, "noise": noise,
                       "seed": seed}  # fmt: skip


def make_moons(n_examples: int = 1000, noise: float = 0.1, seed: int = 0):
    """Two interleaving half circles in 2-D with Gaussian noise, the same for the same seed.

    >>> X, y = make_moons(10)
    >>> tuple(X.shape), sorted(set(y.tolist()))
    ((10, 2), [0, 1])
    """
    rng = np.random.default_rng(seed)
    n_top = n_examples // 2
    t_top = np.linspace(0, np.pi, n_top)
    t_bottom = np.linspace(0, np.pi, n_examples - n_top)
    top = np.stack([np.cos(t_top), np.sin(t_top)], 1)
    bottom = np.stack([1 - np.cos(t_bottom), 0.5 - np.sin(t_bottom)], 1)
    X = np.concatenate([top, bottom]) + rng.normal(0.0, noise, (n_examples, 2))
    y = np.concatenate([np.zeros(n_top), np.ones(n_examples - n_top)])
    return torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


class MoonsDataModule(_InMemoryDataModule):
    """Two interleaving moons in 2-D (1,000 points), generated in code.

    >>> MoonsDataModule().num_classes
    2
    """

    input_dim = 2
    num_classes = 2

    def __init__(self, batch_size: int | None = None, n_examples: int = 1000, noise: float = 0.1, seed: int = 0,
                 num_workers: int = 0):  # fmt: skip
        super().__init__(*make_moons(n_examples, noise, seed), batch_size, num_workers)
        self.recipe = {
            "name": "moons",
            "batch_size": batch_size,
            "n_examples": n_examples,
            "noise": noise,
            "seed": seed,
        }


class DigitsDataModule(_InMemoryDataModule):
    """The 8x8 handwritten digits that scikit-learn ships (1,797 images, 10 classes): real images, offline.

    Images are (1, 8, 8) in [0, 1]; ``LeNet(input_size=8)`` fits them. Needs scikit-learn
    (``pip install 'losstrail[digits]'``).
    """

    input_dim = (1, 8, 8)
    num_classes = 10

    def __init__(self, batch_size: int | None = 64, n_examples: int | None = None, num_workers: int = 0):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ModuleNotFoundError(
                "DigitsDataModule reads the digits that scikit-learn ships; install it: pip install 'losstrail[digits]'"
            ) from None
        digits = load_digits()
        X = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
        y = torch.from_numpy(digits.target.astype(np.int64))
        if n_examples is not None:
            X, y = X[:n_examples], y[:n_examples]
        super().__init__(X, y, batch_size, num_workers)
        self.recipe = {"name": "digits", "batch_size": batch_size, "n_examples": n_examples}


class MNISTDataModule(_InMemoryDataModule):
    """MNIST training images (the first ``n_examples``), read from the standard IDX files.

    Args:
        batch_size: examples per step (default 16, as the reference's example).
        n_examples: how many training images to use (default 3000).
        data_dir: the folder with ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``
            (each may be ``.gz``); default ``$LOSSTRAIL_DATA/mnist`` or ``~/.cache/losstrail/mnist``.
        download: fetch missing files (checksums verified) when the network allows.
        num_workers: DataLoader workers (default 0).
    """

    input_dim = (1, 28, 28)
    num_classes = 10

    def __init__(self, batch_size: int | None = 16, n_examples: int = 3000, data_dir=None, download: bool = True,
                 num_workers: int = 0):  # fmt: skip
        from losstrail.builtin.mnist import load_mnist

        X, y = load_mnist(data_dir, n_examples=n_examples, download=download)
        super().__init__(X, y, batch_size, num_workers)
        self.recipe = {"name": "mnist", "batch_size": batch_size, "n_examples": n_examples,
                       "data_dir": None if data_dir is None else str(data_dir), "download": download}  # fmt: skip


DATAMODULES = {
    "spirals": SpiralsDataModule,
    "moons": MoonsDataModule,
    "digits": DigitsDataModule,
    "mnist": MNISTDataModule,
}


def make_datamodule(name: str, **kwargs) -> _InMemoryDataModule:
    """A built-in data module by name (one of ``losstrail._registry.DATASETS``), without Lightning."""
    return built_datamodule(check_choice("dataset", name, DATASETS), **kwargs)


def built_datamodule(name: str, **kwargs) -> _InMemoryDataModule:
    """``make_datamodule`` for a name checked already where the call came in (``losstrail run``'s ``--dataset``)."""
    datamodule = DATAMODULES[name](**kwargs)
    datamodule.recipe = {"name": name, **kwargs}  # how to build it again (``losstrail surface``)
    return datamodule
