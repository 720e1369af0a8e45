"""Tiny deterministic fixtures shared by the tests."""

import numpy as np
import pytest
import torch

from losstrail.models import MLP


@pytest.fixture
def tiny_data():
    """64 labelled points in 2-D, 3 classes, the same every time."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 2, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    return X, y


@pytest.fixture
def tiny_model():
    """An MLP of 27 parameters (2 -> 4 -> 3)."""
    torch.manual_seed(0)
    return MLP(input_dim=2, num_classes=3, hidden_dim=4)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
