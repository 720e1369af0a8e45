"""A regression MLP with a mean-squared-error loss: its path across the landscape and its Hessian's curvature.

Run: .venv/bin/python examples/regression_mlp.py [OUT.gif]

Fits y = sin(3 x1) + x2^2 / 2 + noise on 512 points with a 2-32-32-1 tanh MLP, plain
``nn.Module`` trained by ``fit`` with ``loss_fn=F.mse_loss``. The plane is the Hessian's two
sharpest directions at the end of training (``make_plane(..., 'hessian')``), so the picture
shows the valley's curvature, with accuracy absent (it is not classification). A few seconds.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import losstrail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="/tmp/regression_mlp.gif", help="the animation (.gif, .mp4, .html)")
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    X = torch.rand(512, 2, generator=g) * 4 - 2
    y = (torch.sin(3 * X[:, :1]) + X[:, 1:] ** 2 / 2) + 0.05 * torch.randn(512, 1, generator=g)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)
    )
    run = losstrail.fit(
        model, (X, y), loss_fn=F.mse_loss, optimizer="adam", learning_rate=1e-2, epochs=200, seed=0, quiet=True
    )
    plane = losstrail.make_plane(run.trajectory, "hessian", model=model, data=(X, y), loss_fn=F.mse_loss, seed=0)
    projection = losstrail.project(plane, run.trajectory, model=model, data=(X, y), loss_fn=F.mse_loss)
    xs, ys = losstrail.path_grid(projection.xy, 41)
    surface = losstrail.loss_surface(model, (X, y), plane, xs, ys, loss_fn=F.mse_loss, quiet=True)
    top, second = plane.eigenvalues
    title = f"regression MLP, MSE: Hessian plane (curvatures {top:.2f}, {second:.2f})"
    losstrail.animate(projection, surface, args.out, title=title, quiet=True)
    print(f"wrote {args.out}: MSE {projection.true_loss[0]:.3f} -> {projection.true_loss[-1]:.4f}, "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
