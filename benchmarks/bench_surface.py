"""The 100x100 surface of the default MLP on spirals: losstrail against the reference's own ``LossGrid``.

Run: .venv/bin/python benchmarks/bench_surface.py [--reference DIR] [--repeats N]
Target (issues 2, 23): ``loss_surface`` at least 3x faster than the reference, both timed here side by
side, interleaved, on the same 100x100 points. The reference is ``loss-landscape-anim==0.1.10``'s
own ``LossGrid`` (install it apart from the project, e.g.
``python -m pip install --no-deps --target /tmp/refpkg loss-landscape-anim==0.1.10``, and pass
``--reference /tmp/refpkg``; its module-level ``torchvision`` and ``importlib_resources`` imports get
stubs, as nothing here uses them). Without it, a loop written as its ``LossGrid`` is stands in (load
the flat weights, forward the whole dataset with gradients on, read the loss). losstrail is timed with
``mode='auto'``, ``'vmap'`` and ``'loop'``; the grid's time is stated against the arithmetic floor:
the MLP's multiply-adds at this machine's matrix-multiply rate, and the first layer's output written
and read once at its memory bandwidth, both measured in the same run.
"""

import argparse
import contextlib
import importlib.resources
import io
import os
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

from losstrail import MLP, Plane, SpiralsDataModule, fit, loss_surface, make_plane, project
from losstrail.builtin.models import load_flat_params


def reference_grid(directory: str | None):
    """``grid(model, X, y, origin, u, v, path_xy, res) -> loss (2 res, 2 res)``: the reference's ``LossGrid``
    from ``directory``, or a loop written as it is when there is none; and what it is, in words."""
    if directory:
        sys.path.insert(0, directory)
        torchvision = types.ModuleType("torchvision")  # imported by its datamodule at module level, unused here
        torchvision.transforms = types.ModuleType("torchvision.transforms")
        torchvision.datasets = types.ModuleType("torchvision.datasets")
        torchvision.datasets.MNIST = None
        sys.modules.update({"torchvision": torchvision, "torchvision.transforms": torchvision.transforms,
                            "torchvision.datasets": torchvision.datasets})  # fmt: skip
        sys.modules.setdefault("importlib_resources", importlib.resources)
        from loss_landscape_anim import MLP as ReferenceMLP
        from loss_landscape_anim import LossGrid

        def grid(trained, X, y, origin, u, v, xy, res):
            model = ReferenceMLP(input_dim=2, num_classes=3, learning_rate=5e-3)
            model.load_state_dict(trained.state_dict())
            path = [torch.from_numpy(origin)]  # the grid's centre is the path's last point
            with contextlib.redirect_stdout(io.StringIO()):  # it prints as it goes
                made = LossGrid(path, model, (X, y), xy, (torch.from_numpy(u), torch.from_numpy(v)),
                                res=res, tqdm_disable=True, save_grid=False)  # fmt: skip
            return made.loss_values_2d

        return grid, "the reference's LossGrid (loss-landscape-anim 0.1.10)"

    def loop(trained, X, y, origin, u, v, xy, res):  # LossGrid.compute_loss_2d as written
        alpha = float(np.linalg.norm(xy[-1] - xy[0])) * (1 + 0.3) / res  # as LossGrid._compute_stepsize
        model = MLP(2, 3)
        loss = np.empty((2 * res, 2 * res))
        for i in range(-res, res):
            for j in range(-res, res):
                load_flat_params(model, torch.from_numpy(origin + i * alpha * u + j * alpha * v).float())
                loss[i + res, j + res] = F.cross_entropy(model(X), y).item()
        return loss.T

    return loop, "a loop written as the reference's LossGrid (the package was not given)"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="folder holding the loss_landscape_anim package (pip install --target)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default torch's); CPU seconds are printed too")
    parser.add_argument("--res", type=int, default=50, help="the grid is 2 res x 2 res (default 50: 100x100)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = args.res  # the reference's grid is 2 res x 2 res
    grid, what = reference_grid(args.reference)
    torch.manual_seed(0)
    dm = SpiralsDataModule()
    run = fit(MLP(2, 3), dm, epochs=300, quiet=True)
    X, y = dm.dataset.tensors
    pca = make_plane(run.trajectory, "pca")
    xy = project(pca, run.trajectory).xy
    alpha = float(np.linalg.norm(xy[-1] - xy[0])) * (1 + 0.3) / res  # as LossGrid._compute_stepsize
    plane = Plane(run.trajectory.params[-1].astype(np.float32), pca.u, pca.v, "custom")  # the grid the reference makes
    xs = ys = alpha * np.arange(-res, res)
    times: dict[str, list[float]] = {"reference": [], "auto": [], "vmap": [], "loop": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}  # CPU seconds: less moved by other work
    surfaces = {}
    for _ in range(args.repeats):  # interleaved, so all see the same machine load
        start, used = time.perf_counter(), time.process_time()
        reference = grid(run.model, X, y, plane.origin, plane.u, plane.v, xy, res)
        times["reference"].append(time.perf_counter() - start)
        cpu["reference"].append(time.process_time() - used)
        print(f"  reference {times['reference'][-1]:.2f} s", end="", flush=True)
        for mode in ("auto", "vmap", "loop"):
            start, used = time.perf_counter(), time.process_time()
            surfaces[mode] = loss_surface(run.model, dm, plane, xs, ys, mode=mode, quiet=True)
            times[mode].append(time.perf_counter() - start)
            cpu[mode].append(time.process_time() - used)
            print(f", {mode} {times[mode][-1]:.2f} s", end="", flush=True)
        print(flush=True)
    for mode, surface in surfaces.items():
        np.testing.assert_allclose(surface.loss, reference, rtol=1e-4, atol=1e-5, err_msg=mode)
    best = {name: min(seconds) for name, seconds in times.items()}
    print(f"{2 * res}x{2 * res} grid, {len(X)} examples, P={plane.n_params}; results agree with the reference")
    print(f"  {what}: best {best['reference']:.2f} s of {', '.join(f'{t:.2f}' for t in times['reference'])}")
    for mode in ("auto", "vmap", "loop"):
        ratio = best["reference"] / best[mode]
        runs = ", ".join(f"{t:.2f}" for t in times[mode])
        print(f"  losstrail mode={mode!r}: best {best[mode]:.2f} s of {runs}: {ratio:.1f}x the reference"
              + (f" (target >= 3x: {'met' if ratio >= 3 else 'NOT met'})" if mode == "auto" else ""))  # fmt: skip
    fewest = {name: min(seconds) for name, seconds in cpu.items()}
    print("  CPU seconds (best): " + ", ".join(f"{name} {t:.2f}" for name, t in fewest.items())
          + f"; mode='auto' {fewest['reference'] / fewest['auto']:.1f}x the reference")  # fmt: skip
    floor, compute, memory = floor_seconds((2 * res) ** 2, len(X), [2, 50, 3])
    print(f"  arithmetic floor {floor:.2f} s (multiply-adds {compute:.2f} s at the GEMM rate measured here, "
          f"first layer's output {memory:.2f} s at the bandwidth measured here): mode='auto' is "
          f"{best['auto'] / floor:.1f}x the floor")  # fmt: skip
    print(f"torch threads {torch.get_num_threads()}; load average (1, 5, 15 min): "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()
