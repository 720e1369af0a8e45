"""The adaptive grid's trade-off on real loss surfaces: exact points against the true error, by tol.

Run: .venv/bin/python benchmarks/bench_adaptive.py [--cache surfaces.npz]
Computes two full 100×100 surfaces with ``loss_surface`` (the default spirals job: MLP, 300
epochs, PCA plane; and LeNet on scikit-learn's digits, 5 epochs, PCA plane, a 500-example
subset), then runs ``adaptive_grid`` on each with ``evaluate`` looking values up in the full
grid, and prints for each tol the fraction of points evaluated exactly, the error it reports
and the true largest relative error over every cell. About 1-2 minutes on two idle CPU cores;
``--cache`` keeps the full surfaces for the next run.
"""

import argparse
import time
from pathlib import Path

import numpy as np

TOLS = (0.002, 0.005, 0.01, 0.02)


def full_surfaces() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import torch

    from losstrail import (
        MLP,
        DigitsDataModule,
        LeNet,
        SpiralsDataModule,
        fit,
        loss_surface,
        make_plane,
        path_grid,
        project,
    )

    surfaces = {}
    torch.manual_seed(0)
    spirals = SpiralsDataModule()
    run = fit(MLP(2, 3, learning_rate=5e-3), spirals, epochs=300, quiet=True)
    plane = make_plane(run.trajectory, "pca")
    xs, ys = path_grid(project(plane, run.trajectory).xy, 100)
    start = time.perf_counter()
    s = loss_surface(run.model, spirals, plane, xs, ys, quiet=True)
    print(f"spirals MLP full 100×100 grid: {time.perf_counter() - start:.1f} s")
    surfaces["spirals MLP"] = (s.loss, s.accuracy)

    torch.manual_seed(0)
    digits = DigitsDataModule(batch_size=64)
    run = fit(LeNet(in_channels=1, num_classes=10, input_size=8), digits, epochs=5, quiet=True)
    plane = make_plane(run.trajectory, "pca")
    xs, ys = path_grid(project(plane, run.trajectory).xy, 100)
    start = time.perf_counter()
    s = loss_surface(run.model, digits, plane, xs, ys, subset=500, quiet=True)
    print(f"digits LeNet full 100×100 grid, 500 examples: {time.perf_counter() - start:.1f} s")
    surfaces["digits LeNet"] = (s.loss, s.accuracy)
    return surfaces


def main() -> None:
    from losstrail.evaluation.adaptive import adaptive_grid, relative_difference
    from losstrail.evaluation.plan import expected_exact

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="an .npz to keep the full surfaces in between runs")
    args = parser.parse_args()
    if args.cache and args.cache.exists():
        stored = np.load(args.cache)
        surfaces = {
            name: (stored[f"{name}/loss"], stored[f"{name}/accuracy"]) for name in ("spirals MLP", "digits LeNet")
        }
    else:
        surfaces = full_surfaces()
        if args.cache:
            np.savez(
                args.cache,
                **{f"{n}/{k}": v for n, pair in surfaces.items() for k, v in zip(("loss", "accuracy"), pair)},
            )

    print(f"\n{'surface':<14} {'tol':>6} {'exact':>7} {'(plan)':>7} {'reported':>9} {'true max':>9} {'calls':>5}")
    for name, (loss, accuracy) in surfaces.items():
        for tol in TOLS:
            calls = []

            def evaluate(ij):
                calls.append(len(ij))
                return loss[ij[:, 0], ij[:, 1]], accuracy[ij[:, 0], ij[:, 1]]

            grid = adaptive_grid(evaluate, loss.shape[1], loss.shape[0], tol=tol)
            true = float(relative_difference(grid.loss, loss, grid.floor).max())
            assert true <= grid.max_error <= tol, (name, tol, true, grid.max_error)
            plan = expected_exact(loss.shape[1], loss.shape[0], tol) / loss.size
            print(
                f"{name:<14} {tol:>6g} {grid.n_exact / loss.size:>7.1%} {plan:>7.1%} "
                f"{grid.max_error:>9.2%} {true:>9.2%} {len(calls):>5}"
            )


if __name__ == "__main__":
    main()
