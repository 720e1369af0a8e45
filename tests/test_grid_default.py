"""One default grid for ``loss_surface``, and the README says the same (issue 23, item 6)."""

import inspect
import re
from pathlib import Path

import numpy as np
import torch

from losstrail.api import loss_landscape_anim
from losstrail.evaluation.grids import loss_surface
from losstrail.values.plane import Plane

README = Path(__file__).resolve().parent.parent / "README.md"


def test_loss_surface_measures_every_point_by_default(tiny_model, tiny_data):
    """No argument: every cell measured (none interpolated), equal to asking for ``grid='full'``."""
    flat = torch.cat([p.detach().flatten() for p in tiny_model.parameters()]).numpy()
    rng = np.random.default_rng(0)
    plane = Plane(flat, *rng.normal(size=(2, flat.size)).astype(np.float32), "random")
    xs = ys = np.linspace(-1.0, 1.0, 12)
    default = loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=True)
    assert not default.adaptive and default.exact is None  # None: no cell interpolated
    full = loss_surface(tiny_model, tiny_data, plane, xs, ys, grid="full", quiet=True)
    np.testing.assert_array_equal(default.loss, full.loss)


def test_the_readme_states_the_defaults_the_code_has():
    text = " ".join(README.read_text().split())
    stated = re.search(r"\*\*Grids\.\*\* `loss_surface` [^*]*? Its default is `grid=\"(\w+)\"`", text)
    assert stated, "the README no longer states loss_surface's default grid"
    assert stated.group(1) == inspect.signature(loss_surface).parameters["grid"].default
    job = re.search(r"`grid=\"(\w+)\"` \(`--grid \w+`, \*\*the default of `loss_landscape_anim`", text)
    assert job and job.group(1) == inspect.signature(loss_landscape_anim).parameters["grid"].default
