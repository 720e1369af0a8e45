"""Two fine-tunes of one base model, and the loss on the plane through the three (Garipov et al., 2018).

Run: .venv/bin/python examples/three_models.py [OUT.gif]

A base MLP is trained on the spirals' first two arms, then fine-tuned twice from the same
weights: once on the third arm alone ("tune C"), once on all three with a larger learning rate
("tune all"). ``make_plane([base, tune_c, tune_all], "through")`` puts the base at (0, 0) and
the first fine-tune at (1, 0); the animation draws the second fine-tune's recorded path over
that plane, and marks and names the three models with each one's loss over the whole data
(evaluated exactly, not read off the grid). A still (``OUT.png``) shows the whole path.
About a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import losstrail
from losstrail.builtin.data import make_spirals


def tune(model, X, y, steps: int, lr: float, record: bool = False):
    """``steps`` of full-batch Adam on ``(X, y)``; the path when ``record``."""
    rec = losstrail.Recorder(model) if record else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rec is not None:
            rec.record(loss=loss)
    if rec is None:
        return None
    with torch.no_grad():
        rec.finish(loss=F.cross_entropy(model(X), y))  # the loss at the final parameters too
    return rec.trajectory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="/tmp/three_models.gif", help="the animation (.gif, .mp4, .html)")
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    X, y = make_spirals()
    base = losstrail.MLP(input_dim=2, num_classes=3, hidden_dim=32, num_hidden_layers=2)
    first_two = y < 2
    tune(base, X[first_two], y[first_two], steps=300, lr=1e-2)
    tune_c, tune_all = copy.deepcopy(base), copy.deepcopy(base)
    tune(tune_c, X[y == 2], y[y == 2], steps=100, lr=5e-3)
    path = tune(tune_all, X, y, steps=200, lr=2e-2, record=True)

    plane = losstrail.make_plane([base, tune_c, tune_all], "through", labels=("base", "tune C", "tune all"))
    projection = losstrail.project(plane, path, model=base, data=(X, y))
    xs, ys = losstrail.path_grid([*plane.marks_xy, *projection.xy], resolution=40)
    surface = losstrail.loss_surface(base, (X, y), plane, xs, ys, quiet=True)
    title = "two fine-tunes of one base: the plane through the three"
    losstrail.animate(projection, surface, args.out, title=title, max_frames=60, quiet=True)
    still = Path(args.out).with_suffix(".png")
    losstrail.animate(projection, surface, still, title=title)
    losses = ", ".join(f"{n} {v:.3f}" for n, v in zip(plane.marks, surface.marks_loss))
    print(f"wrote {args.out} and {still}: loss {losses}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
