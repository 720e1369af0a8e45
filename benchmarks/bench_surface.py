"""The 100x100 surface of the default MLP on spirals: vectorized vs a plain per-point loop.

Run: .venv/bin/python benchmarks/bench_surface.py
Target (issue 2): at least 3x faster than the loop, both timed here side by side. The loop is the
reference's ``LossGrid`` as it is written (load the flat weights, forward the whole dataset, read the
loss). The grid's time is also stated against the arithmetic floor (issue 23): the MLP's
multiply-adds at this machine's matrix-multiply rate, and the first layer's output written and
read once at its memory bandwidth, both measured in the same run.
"""

import os
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


def floor_seconds(points: int, examples: int, widths: list[int]) -> tuple[float, float, float]:
    """``(floor, compute, memory)`` seconds: an MLP of ``widths`` at ``points`` points over ``examples``
    examples at the GEMM rate and memory bandwidth measured here, whichever binds."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(3):
        torch.mm(a, b)
    flop_rate = 3 * 2 * 2048**3 / (time.perf_counter() - start)
    big = torch.empty(64 << 20)  # 256 MB
    big.fill_(1.0)
    start = time.perf_counter()
    copy = big.clone()
    bandwidth = 2 * 4 * big.numel() / (time.perf_counter() - start)  # read and write
    del copy
    flops = 2 * points * examples * sum(w_in * w_out for w_in, w_out in zip(widths[:-1], widths[1:]))
    traffic = 2 * 4 * points * examples * widths[1]  # the first layer's output, written and read once
    return max(flops / flop_rate, traffic / bandwidth), flops / flop_rate, traffic / bandwidth


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
    floor, compute, memory = floor_seconds(resolution * resolution, len(X), [2, 50, 3])
    print(f"  arithmetic floor {floor:.2f} s (multiply-adds {compute:.2f} s at the GEMM rate measured here, "
          f"first layer's output {memory:.2f} s at the bandwidth measured here): the grid is {min(ours) / floor:.1f}x "
          "the floor")  # fmt: skip
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
