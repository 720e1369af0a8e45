"""Data as batches: any tree of tensors, a Dataset, a DataLoader or a DataModule.

A batch is any tree of tensors — a tuple, list, dict (or other mapping, such as a
``transformers`` ``BatchEncoding``), namedtuple or dataclass — whose tensor leaves share
their leading (example) dimension. Other leaves (strings, numbers, ``None``) ride along
unchanged. Every stage that turns data into batches (the grid, the path's losses, the
Hessian, subsets, BatchNorm statistics) goes through this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

__all__ = [
    "Batches",
    "TreeDataset",
    "as_dataset",
    "batch_length",
    "is_datamodule",
    "is_lightning_datamodule",
    "is_lightning_module",
    "map_tree",
    "take_subset",
    "tree_leaves",
]

# Data held in memory between passes when it comes from a loader (bytes).
CACHE_LIMIT = 1 << 30


def _is_namedtuple(value) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def map_tree(fn: Callable[[torch.Tensor], Any], tree):
    """``tree`` with ``fn`` applied to every tensor leaf; containers keep their type where they can.

    >>> map_tree(lambda t: t * 2, {"a": torch.ones(2), "b": (torch.zeros(1), "text")})
    {'a': tensor([2., 2.]), 'b': (tensor([0.]), 'text')}
    """
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if _is_namedtuple(tree):
        return type(tree)(*(map_tree(fn, t) for t in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(map_tree(fn, t) for t in tree)
    if isinstance(tree, Mapping):
        mapped = {k: map_tree(fn, v) for k, v in tree.items()}
        if type(tree) is dict:
            return mapped
        try:  # BatchEncoding, OrderedDict, ...: the same mapping type where it can be rebuilt
            return type(tree)(mapped)
        except Exception:
            return mapped
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        changes = {f.name: map_tree(fn, getattr(tree, f.name)) for f in dataclasses.fields(tree) if f.init}
        return dataclasses.replace(tree, **changes)
    return tree


def tree_leaves(tree, prefix: str = "batch") -> list[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for every tensor leaf, paths written as in Python (``batch['input_ids']``)."""
    if isinstance(tree, torch.Tensor):
        return [(prefix, tree)]
    if isinstance(tree, (tuple, list)):
        return [leaf for i, t in enumerate(tree) for leaf in tree_leaves(t, f"{prefix}[{i}]")]
    if isinstance(tree, Mapping):
        return [leaf for k, v in tree.items() for leaf in tree_leaves(v, f"{prefix}[{k!r}]")]
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return [
            leaf for f in dataclasses.fields(tree) for leaf in tree_leaves(getattr(tree, f.name), f"{prefix}.{f.name}")
        ]
    return []


def batch_length(tree, argument: str = "data") -> int:
    """The examples in a batch tree: the leading dimension its tensor leaves share.

    >>> batch_length({"x": torch.zeros(3, 2), "y": torch.zeros(3)})
    3
    >>> batch_length((torch.zeros(3, 2), torch.zeros(4)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: data holds tensors whose leading (example) dimensions differ: batch[0] has 3, batch[1] has 4; ...
    """
    leaves = tree_leaves(tree)
    if not leaves:
        raise ValueError(
            f"{argument} holds no tensors (got a {type(tree).__name__}); pass tensors, e.g. (X, y) or "
            "{'input_ids': ..., 'labels': ...}"
        )
    sizes = {}
    for path, t in leaves:
        if t.dim() == 0:
            raise ValueError(f"{argument} has a 0-d tensor at {path}; every tensor needs a leading example dimension")
        sizes[path] = t.shape[0]
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{p} has {n}" for p, n in list(sizes.items())[:4])
        raise ValueError(
            f"{argument} holds tensors whose leading (example) dimensions differ: {shown}; "
            "every tensor must have one row per example"
        )
    return next(iter(sizes.values()))


def nbytes(tree) -> int:
    return sum(t.element_size() * t.numel() for _, t in tree_leaves(tree))


def index_tree(tree, index):
    """The rows ``index`` (a slice or an index tensor) of every tensor leaf."""
    return map_tree(lambda t: t[index], tree)


def is_tree_of_tensors(data) -> bool:
    """True for a batch tree given directly as data (not a Dataset, DataLoader or DataModule)."""
    if isinstance(data, (Dataset, DataLoader)) or is_datamodule(data):
        return False
    container = isinstance(data, (tuple, list, Mapping, torch.Tensor)) or (
        dataclasses.is_dataclass(data) and not isinstance(data, type)
    )
    return container and bool(tree_leaves(data))


def is_datamodule(data) -> bool:
    """True for a data module: a LightningDataModule, or an object with its ``setup`` and ``train_dataloader``.

    The built-in ones of ``losstrail.builtin.data`` answer so without Lightning.
    """
    if isinstance(data, (Dataset, DataLoader, type)):
        return False
    duck = all(callable(getattr(data, name, None)) for name in ("prepare_data", "setup", "train_dataloader"))
    return duck or is_lightning_datamodule(data)


def is_lightning_datamodule(data) -> bool:
    """True for a LightningDataModule of either namespace, without importing Lightning."""
    return _lightning_base(data, "LightningDataModule")


def is_lightning_module(model) -> bool:
    """True for a LightningModule of either namespace, without importing Lightning."""
    return _lightning_base(model, "LightningModule")


def _lightning_base(value, name: str) -> bool:
    """True when Lightning's class ``name`` (``lightning`` or ``pytorch_lightning``) is a base of ``value``'s class."""
    for cls in type(value).__mro__:
        if cls.__name__ == name and cls.__module__.split(".")[0] in ("lightning", "pytorch_lightning"):
            return True
    return False


class TreeDataset(Dataset):
    """A batch tree held in memory as a Dataset: item ``i`` is the tree of row ``i``.

    >>> ds = TreeDataset({"x": torch.arange(6.0).view(3, 2), "y": torch.arange(3)})
    >>> len(ds), ds[1]["y"].item()
    (3, 1)
    """

    def __init__(self, tree, argument: str = "data"):
        self.tree = tree
        self.n = batch_length(tree, argument)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return index_tree(self.tree, i)

    def rows(self, index) -> Any:
        """The tree of the rows ``index`` at once (a slice or an index tensor)."""
        return index_tree(self.tree, index)


def as_dataset(data, argument: str = "data") -> Dataset:
    """The Dataset behind any supported kind of data."""
    if isinstance(data, (TreeDataset, TensorDataset)):
        return data
    if is_datamodule(data):
        dataset = getattr(data, "dataset", None)
        if isinstance(dataset, Dataset):
            return dataset
        data = _train_loader(data)
    if isinstance(data, DataLoader):
        return data.dataset
    if isinstance(data, Dataset):
        return data
    if is_tree_of_tensors(data):
        if (
            isinstance(data, (tuple, list))
            and not _is_namedtuple(data)
            and all(isinstance(t, torch.Tensor) for t in data)
        ):
            batch_length(data, argument)
            return TensorDataset(*data)
        return TreeDataset(data, argument)
    raise TypeError(
        f"{argument}={type(data).__name__} is not supported; pass a tree of tensors such as (X, y) or "
        "{'input_ids': ..., 'labels': ...}, a Dataset, a DataLoader or a LightningDataModule"
    )


def _train_loader(datamodule) -> DataLoader:
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def take_subset(data, n: int, seed: int | None = 0, *, argument: str = "subset") -> Dataset:
    """A seeded random subset of ``n`` examples of ``data``, in their original order.

    >>> X, y = torch.arange(10.0)[:, None], torch.arange(10)
    >>> sub = take_subset((X, y), 4, seed=0)
    >>> len(sub), sorted(sub.tensors[1].tolist()) == sub.tensors[1].tolist()
    (4, True)
    """
    dataset = as_dataset(data)
    size = len(dataset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{argument}={n!r} must be a positive number of examples, or None for all of them")
    if n > size:
        raise ValueError(f"{argument}={n} is larger than the data ({size} examples); pass at most {size}, or None")
    index = np.sort(np.random.default_rng(seed).choice(size, int(n), replace=False))
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[torch.from_numpy(index)] for t in dataset.tensors))
    if isinstance(dataset, TreeDataset):
        return TreeDataset(dataset.rows(torch.from_numpy(index)))
    return torch.utils.data.Subset(dataset, index.tolist())


def batch_source(data, batch_size: int) -> Callable[[], Iterable]:
    """A function that returns a fresh iterable of batches over ``data``, in a fixed order."""
    if not isinstance(data, DataLoader):
        data = as_dataset(data)
    if isinstance(data, TensorDataset):
        tensors = data.tensors
        n = len(tensors[0])
        return lambda: (tuple(t[i : i + batch_size] for t in tensors) for i in range(0, n, batch_size))
    if isinstance(data, TreeDataset):
        return lambda: (data.rows(slice(i, i + batch_size)) for i in range(0, len(data), batch_size))
    if isinstance(data, DataLoader):
        return lambda: iter(data)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    return lambda: iter(loader)


def check_first_batch(data, argument: str = "data") -> int:
    """Raise a clear ValueError unless the first batch of ``data`` is a tree of tensors; its length if it is."""
    batch = next(iter(batch_source(data, 1 << 16)()), None)
    if batch is None:
        raise ValueError(f"{argument} holds no examples; pass at least one")
    return batch_length(batch, argument)


class Batches:
    """Batch trees from any supported kind of data, on ``device``, held in memory when small.

    Iterating gives the batches in a fixed order, every time the same.
    ``n_examples`` and ``n_batches`` count them.
    """

    def __init__(self, data, batch_size: int, device: torch.device | str = "cpu", argument: str = "data"):
        self.device = torch.device(device)
        self.argument = argument
        self._source = batch_source(data, batch_size)
        cached, size = [], 0
        for batch in self._source():
            size += nbytes(batch)
            if size > CACHE_LIMIT:
                cached = None
                break
            batch_length(batch, argument)
            cached.append(self._to_device(batch))
        self.cached: list | None = cached
        if self.cached is not None:
            self.lengths = [batch_length(b, argument) for b in self.cached]
        else:
            self.lengths = [batch_length(b, argument) for b in self._source()]
        self.n_examples = sum(self.lengths)
        self.n_batches = len(self.lengths)
        if self.n_examples == 0:
            raise ValueError(f"{argument} holds no examples; pass at least one")

    def _to_device(self, batch):
        return map_tree(lambda t: t.to(self.device), batch)

    def __iter__(self) -> Iterator:
        if self.cached is not None:
            yield from self.cached
        else:
            for batch in self._source():
                yield self._to_device(batch)

    def first(self):
        return next(iter(self))


def batch_loader(dataset: TensorDataset, batch_size: int | None, *, shuffle: bool, num_workers: int = 0) -> DataLoader:
    """A DataLoader over ``dataset`` that indexes a whole batch at a time.

    ``batch_size=None`` means the whole dataset in one batch.

    >>> ds = TensorDataset(torch.arange(10.0), torch.arange(10))
    >>> [len(x) for x, _ in batch_loader(ds, 4, shuffle=False)]
    [4, 4, 2]
    """
    n = len(dataset)
    sampler = IndexBatches(n, n if batch_size is None else batch_size, shuffle=shuffle)
    return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers)


class IndexBatches(Sampler):
    """Batches of indices into ``n`` examples as int64 tensors, the last one shorter.

    With ``shuffle`` the order is a fresh permutation each epoch, drawn from torch's global
    generator (so ``seed_everything`` fixes it).

    >>> [b.tolist() for b in IndexBatches(5, 2, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool):
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n) if self.shuffle else torch.arange(self.n)
        yield from order.split(self.batch_size)
