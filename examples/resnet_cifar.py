"""ResNet-18 (random init) on CIFAR-shaped images: a filter-normalized plane with BatchNorm statistics recomputed.

Run: .venv/bin/python examples/resnet_cifar.py [OUT.gif]

The data are 3x32x32 images made here (no download): ten classes, each a coloured blob
pattern of its own with noise. The network is torchvision's ``resnet18(num_classes=10)``
when torchvision imports beside this torch, else the same layout from ``examples/resnet.py``.
By default the layout is slimmed to width 16 (0.7M parameters) to run in about a minute on
two CPU cores; ``--width 64`` is the standard 11.2M-parameter ResNet-18 (about six minutes).
``fit`` trains it with SGD with momentum; the plane is two filter-normalized random
directions (Li et al., 2018) through the final weights, drawn on their extent, -1 to 1;
``bn_batches=1``
recomputes the BatchNorm statistics at every grid point and along the path, so each point's
loss is the loss of a network with its own statistics, not the final one's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from resnet import resnet18

import losstrail


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` CIFAR-shaped images (n, 3, 32, 32) in ten classes: a class's colour pattern plus noise."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.nn.functional.interpolate(torch.randn(10, 3, 4, 4, generator=g), size=32, mode="bilinear")
    g.manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    return patterns[y] + 1.5 * torch.randn(n, 3, 32, 32, generator=g), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="/tmp/resnet_cifar.gif", help="the animation (.gif, .mp4, .html)")
    parser.add_argument(
        "--width", type=int, default=16, help="channels of the first stage (64: the standard ResNet-18)"
    )
    parser.add_argument("--resolution", type=int, default=11)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    model = resnet18(num_classes=10, width=args.width)
    train, test = images(256, seed=1), images(64, seed=2)
    run = losstrail.fit(model, train, optimizer="momentum", learning_rate=0.02, epochs=8, seed=0, record_every=1)
    print(f"trained {sum(p.numel() for p in model.parameters()):,} parameters, {len(run.trajectory)} points "
          f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    plane = losstrail.make_plane(run.trajectory, "filter", model=model, seed=0)
    projection = losstrail.project(plane, run.trajectory, model=model, data=test, bn_batches=1)
    xs = ys = np.linspace(-1, 1, args.resolution)  # Li et al.'s extent for filter-normalized planes
    surface = losstrail.loss_surface(model, test, plane, xs, ys, bn_batches=1, batch_size=64)
    title = f"ResNet-18 (width {args.width}), CIFAR-shaped data: filter-normalized plane, BatchNorm recomputed"
    losstrail.animate(projection, surface, args.out, title=title, quiet=True)
    print(f"wrote {args.out}: loss {surface.loss.min():.3f} to {surface.loss.max():.3f} on the plane, "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
