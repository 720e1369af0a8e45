"""Lightning DataModules of the built-in datasets, and the reference package's ``datamodule`` module.

``from loss_landscape_anim.datamodule import SpiralsDataModule, MNISTDataModule`` becomes
``from losstrail.datamodule import SpiralsDataModule, MNISTDataModule``. Both are
losstrail's own (see ``losstrail.builtin.data``): they take the reference's arguments and carry its
attributes (``dataset``, ``X``, ``y``, ``input_dim``, ``num_classes``, ``batch_size``).

Each class here is the data module of ``losstrail.builtin.data`` of the same name on Lightning's
``LightningDataModule`` base, so a Lightning ``Trainer`` of your own takes it as
``trainer.fit(model, datamodule=...)``; ``losstrail.SpiralsDataModule`` and the others are
these. The default job uses the ones of ``losstrail.builtin.data`` and never imports Lightning.

>>> from losstrail.datamodule import SpiralsDataModule
>>> dm = SpiralsDataModule()
>>> X, y = dm.dataset.tensors
>>> X.shape == dm.X.shape, dm.input_dim, dm.num_classes
(True, 2, 3)
"""

from __future__ import annotations

import lightning.pytorch as pl

from losstrail.builtin import data

__all__ = ["DigitsDataModule", "MNISTDataModule", "MoonsDataModule", "SpiralsDataModule"]


class SpiralsDataModule(data.SpiralsDataModule, pl.LightningDataModule):
    __doc__ = data.SpiralsDataModule.__doc__


class MoonsDataModule(data.MoonsDataModule, pl.LightningDataModule):
    __doc__ = data.MoonsDataModule.__doc__


class DigitsDataModule(data.DigitsDataModule, pl.LightningDataModule):
    __doc__ = data.DigitsDataModule.__doc__


class MNISTDataModule(data.MNISTDataModule, pl.LightningDataModule):
    __doc__ = data.MNISTDataModule.__doc__
