"""The 100x100 surface of the default MLP on spirals: vectorized vs a plain per-point loop.

Run: .venv/bin/python benchmarks/bench_surface.py
Target (issue 2): at least 3x faster than the loop, both timed here side by side.
"""

import time

import numpy as np
import torch
import torch.nn.functional as F

from losstrail import MLP, SpiralsDataModule, fit, loss_surface, make_plane, path_grid, project
from losstrail.models import load_flat_params


def plain_loop(model, X, y, plane, xs, ys):
    """What the reference did: load each grid point's weights into the model, forward all data."""
    loss = np.empty((len(ys), len(xs)))
    acc = np.empty_like(loss)
    model.eval()
    with torch.no_grad():
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                load_flat_params(model, torch.from_numpy(plane.point(xv, yv)))
                out = model(X)
                loss[i, j] = F.cross_entropy(out, y).item()
                acc[i, j] = (out.argmax(1) == y).float().mean().item()
    return loss, acc


def main(resolution: int = 100, repeats: int = 3) -> None:
    torch.manual_seed(0)
    dm = SpiralsDataModule()
    run = fit(MLP(2, 3), dm, epochs=300, quiet=True)
    plane = make_plane(run.trajectory, "pca")
    xs, ys = path_grid(project(plane, run.trajectory).xy, resolution)
    X, y = dm.dataset.tensors
    ours, loop = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        start = time.perf_counter()
        surface = loss_surface(run.model, dm, plane, xs, ys, quiet=True)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref_loss, _ = plain_loop(MLP(2, 3), X, y, plane, xs, ys)
        loop.append(time.perf_counter() - start)
    np.testing.assert_allclose(surface.loss, ref_loss, rtol=1e-4, atol=1e-5)
    print(f"{resolution}x{resolution} grid, {len(X)} examples, P={plane.n_params}")
    print(f"  vectorized (vmap): best {min(ours):.2f} s   per-point loop: best {min(loop):.2f} s")
    ratio = min(loop) / min(ours)
    print(f"  speed-up {ratio:.1f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
