"""The reference package's ``datamodule`` module, for code written for ``loss-landscape-anim``.

``from loss_landscape_anim.datamodule import SpiralsDataModule, MNISTDataModule`` becomes
``from losstrail.datamodule import SpiralsDataModule, MNISTDataModule``. Both are
losstrail's own (see ``losstrail.data``): they take the reference's arguments and carry its
attributes (``dataset``, ``X``, ``y``, ``input_dim``, ``num_classes``, ``batch_size``).

>>> from losstrail.datamodule import SpiralsDataModule
>>> dm = SpiralsDataModule()
>>> X, y = dm.dataset.tensors
>>> X.shape == dm.X.shape, dm.input_dim, dm.num_classes
(True, 2, 3)
"""

from __future__ import annotations

from losstrail.data import MNISTDataModule, SpiralsDataModule

__all__ = ["MNISTDataModule", "SpiralsDataModule"]
