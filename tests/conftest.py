"""Tiny deterministic fixtures shared by the tests, and a check that the suite leaves the repository as it was."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from losstrail.builtin.models import MLP


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


REPOSITORY = Path(__file__).resolve().parent.parent
# Made by the tools, not by the code under test.
_TOOL_FOLDERS = {".git", ".venv", "__pycache__", ".ruff_cache", ".pytest_cache", "build", "shared"}


def _tree(root: Path) -> set[str]:
    """Every file and folder under ``root`` (folders too: an empty one left behind counts)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _TOOL_FOLDERS and not d.endswith(".egg-info")]
        rel = Path(folder).relative_to(root)
        found.update(str(rel / name) for name in dirs + files)
    return found


@pytest.fixture(autouse=True, scope="session")
def repository_left_as_found():
    """Fail the session if any test wrote a file or folder into the repository (tests write to tmp_path)."""
    before = _tree(REPOSITORY)
    yield
    left = sorted(_tree(REPOSITORY) - before)
    assert not left, f"the tests left these in the repository: {left[:10]}"
