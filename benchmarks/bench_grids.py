"""Full against adaptive grids, end to end, side by side; and LeNet grid throughput, old path against new.

Run: .venv/bin/python benchmarks/bench_grids.py [--skip-full-lenet] [--keep DIR]
Jobs, each in a fresh process, timed from interpreter start to the written GIF:

1. the reference README's LeNet example (LeNet-5, Adam, batch 16, 10 epochs, 100×100 view) on
   3,000 MNIST-shaped 28×28 images this script writes as IDX files (ten smooth class
   prototypes, shifted and noisy), with ``grid='full'`` and with ``grid='adaptive'``;
2. the digits/LeNet command of the README (``losstrail run --dataset digits --model lenet
   --batch-size 64 --epochs 5``), both grids;
3. the default spirals job (``loss_landscape_anim(n_epochs=300)``), both grids.

Between 1 and 2 (``lenet-phases``), the LeNet example stage by stage with the public functions:
import, training, PCA, the path's true and slice losses at the measured frames, the adaptive
grid, the GIF.

For each job: seconds end to end, exact points, and the largest relative difference
``|adaptive - full| / |full|`` over every cell (both runs train the same seeded path onto the
same plane; the script checks the planes agree). Then LeNet grid throughput on the example's
plane, 20×20 points over the 3,000 images, with the evaluation path of before issue 12 (the
first layer at every point, the data in one batch of 3,000) against today's (first layer factored,
batches cut to fit the cache), run alternately so the machine's load hits both alike.
Aims on two cores (issue 12): the LeNet example end to end ≤ 60 s with a surface within 1% of the
full grid; LeNet grid throughput ≥ 1.5× the old path; the spirals default job no slower than
with the full grid. The full LeNet grid takes many minutes (``--skip-full-lenet`` leaves it out).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
LENET_EXAMPLE = r"""
import sys
from losstrail import LeNet, MNISTDataModule, loss_landscape_anim
data_dir, run_dir, out, grid = sys.argv[1:5]
loss_landscape_anim(
    n_epochs=10, model=LeNet(learning_rate=1e-3), datamodule=MNISTDataModule(batch_size=16, n_examples=3000,
    data_dir=data_dir, download=False), optimizer="adam", giffps=15, seed=180102, load_model=False,
    output_to_file=True, output_filename=out, model_dirpath=run_dir, grid=grid, quiet=True,
)
"""
PHASES = r"""
import sys, time
start = time.perf_counter()
import lightning.pytorch as pl, numpy as np
import losstrail as lt
from losstrail._frames import measured_points, select_frames
from losstrail._threads import free_core_threads
data_dir, out = sys.argv[1:3]
took = {"import": time.perf_counter() - start}

def phase(name, fn):
    t = time.perf_counter()
    value = fn()
    took[name] = time.perf_counter() - t
    return value

with free_core_threads():
    pl.seed_everything(180102, workers=True, verbose=False)
    dm = lt.MNISTDataModule(batch_size=16, n_examples=3000, data_dir=data_dir, download=False)
    model = lt.LeNet(learning_rate=1e-3)
    run = phase("train", lambda: lt.fit(model, dm, optimizer="adam", epochs=10, seed=180102, quiet=True))
    plane = phase("plane (PCA)", lambda: lt.make_plane(run.trajectory, "pca"))
    at = measured_points(select_frames(len(run.trajectory), 300))
    path = phase(f"faithfulness ({len(at)} points)", lambda: lt.project(plane, run.trajectory, model=model, data=dm,
                 at=at))  # fmt: skip
    xs, ys = lt.path_grid(path.xy, 100)  # what a PCA plane gets
    surface = phase("grid (adaptive)", lambda: lt.loss_surface(model, dm, plane, xs, ys, grid="adaptive", quiet=True))
    phase("render (GIF)", lambda: lt.animate(path, surface, out, fps=15, max_frames=300, quiet=True))
print("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in took.items()) + f"; {int(surface.exact.sum()):,} points "
      f"exact; total {sum(took.values()):.1f} s", flush=True)
"""
SPIRALS = r"""
import sys
from losstrail import loss_landscape_anim
run_dir, out, grid = sys.argv[1:4]
loss_landscape_anim(n_epochs=300, model_dirpath=run_dir, output_filename=out, grid=grid, quiet=True)
"""
THROUGHPUT = r"""
import sys, time
import numpy as np, torch
import losstrail.evaluation.evaluator as ev
from losstrail import LeNet, MNISTDataModule, Plane
from losstrail.store.rundir import load_weights
from losstrail.evaluation.grids import evaluate_grid
data_dir, run_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
from losstrail._threads import free_cores
torch.set_num_threads(free_cores())  # one thread per free core, as the jobs run (see losstrail._threads)
print(f"  {torch.get_num_threads()} torch thread(s)", flush=True)
model = LeNet()
load_weights(f"{run_dir}/model.pt", model)
p = np.load(f"{run_dir}/plane.npz")
plane = Plane(p["origin"], p["u"], p["v"], "pca")
s = np.load(f"{run_dir}/surface.npz")
xs, ys = s["xs"][:: len(s["xs"]) // n][:n], s["ys"][:: len(s["ys"]) // n][:n]
data = MNISTDataModule(n_examples=3000, data_dir=data_dir, download=False)
old_piece = ev.Evaluator.piece_size

def grid(old):
    ev.FACTOR_FIRST_LAYER = not old
    ev.Evaluator.piece_size = (lambda self, budget: max(self.batches.lengths)) if old else old_piece
    e = ev.Evaluator(model, data)
    start = time.perf_counter()
    surface = evaluate_grid(e, plane, xs, ys)
    return time.perf_counter() - start, surface.loss

times = {True: [], False: []}
losses = {}
for old in (True, False, True, False):
    took, losses[old] = grid(old)
    times[old].append(took)
    print(f"  {'old' if old else 'new'} path, {n}x{n} points: {took:.1f} s ({took / n / n:.3f} s per point)",
          flush=True)
diff = np.abs(losses[True] - losses[False]) / np.abs(losses[True])
best_old, best_new = min(times[True]), min(times[False])
print(f"  throughput: {best_old / best_new:.2f}x the old path (best of two each); same surface to {diff.max():.1e}")
"""


def write_mnist_shaped(folder: Path, n: int = 3000, seed: int = 0) -> None:
    """``n`` 28×28 uint8 images of ten classes as MNIST's two IDX training files in ``folder``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    prototypes = []
    for _ in range(10):  # a few soft strokes per class
        img = np.zeros((28, 28))
        for _ in range(4):
            cy, cx = rng.uniform(7, 21, 2)
            sy, sx = rng.uniform(1.5, 5, 2)
            img += np.exp(-((yy - cy) ** 2) / (2 * sy**2) - (xx - cx) ** 2 / (2 * sx**2))
        prototypes.append(img / img.max())
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.empty((n, 28, 28), np.uint8)
    for k, label in enumerate(labels):
        dy, dx = rng.integers(-3, 4, 2)
        img = np.roll(prototypes[label], (dy, dx), axis=(0, 1)) * rng.uniform(0.6, 1.0)
        img = img + rng.normal(0, 0.15, (28, 28))
        images[k] = np.clip(img * 255, 0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte").write_bytes((0x803).to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in (n, 28, 28)) + images.tobytes())  # fmt: skip
    (folder / "train-labels-idx1-ubyte").write_bytes((0x801).to_bytes(4, "big") + n.to_bytes(4, "big")
                                                     + labels.tobytes())  # fmt: skip


def load() -> str:
    return os.getloadavg().__repr__() if hasattr(os, "getloadavg") else "?"


def timed(argv: list[str]) -> float:
    print(f"  $ {' '.join(argv[:2] + ['...'] if argv[1] == '-c' else argv)}   (load {os.getloadavg()[0]:.1f})",
          flush=True)  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=HERE, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:])
        raise SystemExit(f"failed: {argv}")
    return took


def compare(full_dir: Path, adaptive_dir: Path) -> dict:
    """Exact points and the largest relative difference of the adaptive surface from the full one."""
    for name in ("origin", "u", "v"):
        a, b = np.load(full_dir / "plane.npz")[name], np.load(adaptive_dir / "plane.npz")[name]
        if not np.array_equal(a, b):
            return {"note": "the two runs made different planes; not comparable"}
    full, adaptive = np.load(full_dir / "surface.npz"), np.load(adaptive_dir / "surface.npz")
    exact = adaptive["exact"] if "exact" in adaptive.files else np.ones_like(full["loss"], bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(adaptive["loss"] - full["loss"]) / np.abs(full["loss"])
    reported = float(adaptive["max_error"]) if "max_error" in adaptive.files else None
    return {"exact": int(exact.sum()), "cells": exact.size, "max_rel": float(np.nanmax(rel)), "reported": reported}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-full-lenet", action="store_true", help="leave out the LeNet example's full grid")
    parser.add_argument(
        "--keep", type=Path, help="keep the runs here (and reuse those finished) instead of a temporary folder"
    )
    parser.add_argument("--jobs", default="lenet-example,lenet-phases,digits,spirals",
                        help="which jobs to run, comma-separated")  # fmt: skip
    parser.add_argument("--throughput-points", type=int, default=20, help="n for the n×n throughput grids (0: none)")
    args = parser.parse_args()
    py = sys.executable
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_grids_"))
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "mnist"
    write_mnist_shaped(data_dir)
    print(f"machine: {os.cpu_count()} cores, load {load()}; runs in {root}")
    rows = []

    record = root / "times.json"
    done = json.loads(record.read_text()) if args.keep and record.exists() else {}

    def job(name, argv_for, grids):
        if name not in args.jobs.split(","):
            return
        times = {}
        for grid in grids:
            run_dir = root / f"{name}-{grid}"
            if f"{name}-{grid}" in done:  # --keep: a job finished by an earlier run of this script
                times[grid] = done[f"{name}-{grid}"]
            else:
                times[grid] = done[f"{name}-{grid}"] = timed(argv_for(grid, run_dir))
                record.write_text(json.dumps(done))
            print(f"  {name}, grid={grid}: {times[grid]:.1f} s end to end", flush=True)
        result = compare(root / f"{name}-full", root / f"{name}-adaptive") if "full" in grids else {}
        rows.append((name, times, result))
        print(f"  {name}: {result}", flush=True)

    def lenet(grid, run_dir):
        return [py, "-c", LENET_EXAMPLE, str(data_dir), str(run_dir), str(run_dir / "lenet.gif"), grid]

    def digits(grid, run_dir):
        return [py, "-m", "losstrail", "run", "--dataset", "digits", "--model", "lenet", "--batch-size", "64",
                "--epochs", "5", "--out", str(run_dir / "digits.gif"), "--run-dir", str(run_dir), "--grid", grid,
                "--quiet"]  # fmt: skip

    def spirals(grid, run_dir):
        return [py, "-c", SPIRALS, str(run_dir), str(run_dir / "sample.gif"), grid]

    print("1. the reference README's LeNet example, MNIST-shaped data (3,000 images, 10 epochs, 100×100)")
    job("lenet-example", lenet, ("adaptive",) if args.skip_full_lenet else ("adaptive", "full"))
    if "lenet-phases" in args.jobs.split(","):
        print("1b. the same example stage by stage (what each costs)")
        subprocess.run([py, "-c", PHASES, str(data_dir), str(root / "phases.gif")], cwd=HERE, check=True)
    print("2. the README's digits/LeNet command")
    job("digits", digits, ("adaptive", "full"))
    print("3. the default spirals job")
    job("spirals", spirals, ("adaptive", "full"))
    lenet_run = root / ("lenet-example-adaptive" if args.skip_full_lenet else "lenet-example-full")
    if args.throughput_points and (lenet_run / "surface.npz").exists():
        print(f"4. LeNet grid throughput, {args.throughput_points}x{args.throughput_points} points × 3,000 images "
              f"(load {os.getloadavg()[0]:.1f})")  # fmt: skip
        subprocess.run([py, "-c", THROUGHPUT, str(data_dir), str(lenet_run),
                        str(args.throughput_points)], cwd=HERE, check=True)  # fmt: skip

    print("\n| job | full grid | adaptive (tol 0.01) | exact points | max relative difference, every cell |")
    print("| --- | --- | --- | --- | --- |")
    for name, times, result in rows:
        full = f"{times['full']:.1f} s" if "full" in times else "not run"
        exact = f"{result['exact']:,} of {result['cells']:,}" if "exact" in result else "-"
        diff = f"{result['max_rel']:.2%}" if "max_rel" in result else result.get("note", "-")
        said = f" (reported ≤ {result['reported']:.2%})" if result.get("reported") is not None else ""
        print(f"| {name} | {full} | {times['adaptive']:.1f} s | {exact} | {diff}{said} |")
    print(f"load at the end: {load()}")


if __name__ == "__main__":
    main()
