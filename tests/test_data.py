import pytest
import torch

from losstrail.builtin.data import SpiralsDataModule, make_datamodule, make_spirals
from losstrail.evaluation.batches import batch_loader


def test_spirals_are_deterministic_balanced_and_bounded():
    X1, y1 = make_spirals()
    X2, y2 = make_spirals()
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert X1.shape == (1110, 2) and X1.dtype == torch.float32
    assert torch.bincount(y1).tolist() == [370, 370, 370]
    assert X1.abs().max() <= 1.0


def test_default_batch_is_the_whole_set_and_workers_zero():
    dm = SpiralsDataModule()
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 1 and len(batches[0][0]) == 1110
    assert loader.num_workers == 0
    assert dm.steps_per_epoch == 1


def test_batches_cover_every_example_once_per_epoch():
    dm = SpiralsDataModule(batch_size=100)
    seen = torch.cat([x for x, _ in dm.train_dataloader()])
    assert len(seen) == 1110
    assert torch.equal(seen.sort(dim=0).values, dm.dataset.tensors[0].sort(dim=0).values)
    assert dm.steps_per_epoch == 12


def test_batch_loader_in_order():
    ds = torch.utils.data.TensorDataset(torch.arange(7.0), torch.arange(7))
    assert torch.cat([y for _, y in batch_loader(ds, 3, shuffle=False)]).tolist() == list(range(7))


def test_bad_batch_size_and_unknown_dataset():
    with pytest.raises(ValueError, match=r"batch_size=0 must be a positive integer"):
        SpiralsDataModule(batch_size=0)
    with pytest.raises(ValueError, match=r"dataset='mnistt' is not known; expected one of 'spirals'"):
        make_datamodule("mnistt")
