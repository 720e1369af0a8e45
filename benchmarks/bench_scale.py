"""Real-model scale: a disk-backed path of a 1M-parameter model, LeNet grid throughput, 2-process grid.

Run: .venv/bin/python benchmarks/bench_scale.py [--steps 5000]  (about 10 minutes; 20 GB of disk)
Targets (issue 6): record 1M parameters for 5,000 steps with peak resident memory under 2 GB,
and PCA of that path in under a minute; LeNet on 3,000 28x28 images, 50x50 grid, against a
plain per-point loop, with the achieved FLOP/s as a share of this machine's matmul peak; the
2-process (gloo) grid against one process (aim 1.7x on 2 cores).
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def record_big_path(steps: int, folder: Path) -> None:
    from losstrail import Recorder
    from losstrail.planes.directions import make_plane

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1000, 1000), torch.nn.Tanh(), torch.nn.Linear(1000, 10))
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    X, y = torch.randn(32, 1000), torch.randint(0, 10, (32,))
    rec = Recorder(model, storage=folder, memory_limit=256 << 20)
    start = time.perf_counter()
    from tqdm.auto import tqdm

    for _ in tqdm(range(steps), desc="recording", unit="step", mininterval=2.0):
        loss = F.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.record(loss=loss)
    trajectory = rec.trajectory
    took = time.perf_counter() - start
    size = trajectory.params.nbytes / 1e9
    print(f"recorded {steps} steps of P={n_params:,} ({size:.1f} GB on disk) in {took:.1f} s; "
          f"peak RSS {peak_rss_gb():.2f} GB (target < 2 GB)")  # fmt: skip
    start = time.perf_counter()
    plane = make_plane(trajectory, "pca")
    took = time.perf_counter() - start
    shares = f"{plane.explained[0]:.6f} + {plane.explained[1]:.3g}"
    print(f"PCA of that path (randomized, two passes): {took:.1f} s (target < 60 s); "
          f"explained {shares}; peak RSS {peak_rss_gb():.2f} GB")  # fmt: skip
    exact = variance_shares(trajectory.params, plane.u, plane.v)
    print(f"  the same shares measured exactly (float64, one more pass): {exact[0]:.6f} + {exact[1]:.3g}")


def variance_shares(params, u, v) -> tuple[float, float]:
    """Share of the path's variance along ``u`` and along ``v`` orthogonalised to it, in float64."""
    u = u / np.linalg.norm(u)
    v = v - (v @ u) * u
    v = v / np.linalg.norm(v)
    mean = np.zeros(params.shape[1])
    for start in range(0, len(params), 64):
        mean += params[start : start + 64].sum(axis=0, dtype=np.float64)
    mean /= len(params)
    total = along_u = along_v = 0.0
    for start in range(0, len(params), 64):
        block = params[start : start + 64].astype(np.float64) - mean
        total += float(np.einsum("ij,ij->", block, block))
        along_u += float(((block @ u) ** 2).sum())
        along_v += float(((block @ v) ** 2).sum())
    return along_u / total, along_v / total


def matmul_peak_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start, n = time.perf_counter(), 5
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - start) / 1e9


def lenet_grid() -> None:
    from losstrail import LeNet, Plane, loss_surface
    from losstrail.builtin.models import flat_params, load_flat_params

    torch.manual_seed(0)
    model = LeNet().eval()
    X, y = torch.randn(3000, 1, 28, 28), torch.randint(0, 10, (3000,))
    theta = flat_params(model).numpy()
    u, v = np.random.default_rng(0).normal(size=(2, theta.size)).astype(np.float32) * 0.01
    plane = Plane(theta, u, v, "random")
    xs = ys = np.linspace(-1, 1, 50)
    start = time.perf_counter()
    loss_surface(model, (X, y), plane, xs, ys, quiet=True)
    ours = time.perf_counter() - start
    probe = LeNet().eval()
    start = time.perf_counter()
    with torch.no_grad():
        for j in range(20):  # a plain loop over 20 of the 2,500 points, scaled up
            load_flat_params(probe, torch.from_numpy(plane.point(xs[j], ys[0])))
            F.cross_entropy(probe(X), y).item()
    loop = (time.perf_counter() - start) / 20 * 2500
    flops = 2 * 2500 * 3000 * lenet_macs()
    peak = matmul_peak_gflops()
    print(
        f"LeNet, 3,000 images, 50x50 grid: {ours:.1f} s vs plain loop ~{loop:.1f} s ({loop / ours:.1f}x); "
        f"{flops / ours / 1e9:.1f} GFLOP/s = {flops / ours / 1e9 / peak:.0%} of the {peak:.0f} GFLOP/s matmul peak"
    )


def lenet_macs() -> int:
    """Multiply-accumulates of one LeNet-5 forward pass on a 28x28 image."""
    conv1 = 28 * 28 * 6 * 5 * 5
    conv2 = 10 * 10 * 16 * 6 * 5 * 5
    return conv1 + conv2 + 16 * 5 * 5 * 120 + 120 * 84 + 84 * 10


def distributed_grid(folder: Path) -> None:
    """An MLP with two hidden layers of 1,024 on the 8x8 digits, 30x30 grid: 4 GFLOP a point, compute-bound.

    Each command is timed whole, start-up included; the start-up alone is the same command
    on the finished surface (it loads the run and stops), so the grid's own time is the
    difference.
    """
    import os

    from typer.testing import CliRunner

    from losstrail.cli import app

    run = folder / "run"
    args = ["run", "--dataset", "digits", "--model", "mlp", "--hidden-dim", "1024", "--hidden-layers", "2"]
    args += ["--epochs", "2", "--resolution", "30", "--frames", "2", "--seed", "0"]
    CliRunner().invoke(app, [*args, "--out", str(folder / "x.gif"), "--run-dir", str(run), "-q"])
    base = [sys.executable, "-m", "losstrail", "surface", str(run), "--force", "--chunk-points", "50", "-q"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

    def timed(command, threads: str) -> float:
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": threads}, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    one, threaded, ranks = timed(base, "1"), timed(base, "2"), timed([*torchrun, *base[1:]], "1")
    startup = timed([a for a in base if a != "--force"], "1")
    print(f"MLP 64-1024-1024-10 grid 30x30 on 1,797 digits: 1 process 1 thread {one:.1f} s, 1 process 2 threads "
          f"{threaded:.1f} s, 2 processes (gloo) 1 thread each {ranks:.1f} s; start-up {startup:.1f} s")  # fmt: skip
    print(f"  2 ranks vs 1 rank: {one / ranks:.2f}x whole, {(one - startup) / (ranks - startup):.2f}x grid alone "
          f"(aim 1.7x); vs 1 process using both cores {threaded / ranks:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    disk = args.steps * 1_010_010 * 4 / 1e9  # float32 rows of the 1M-parameter model
    print(f"bench_scale: about 10 minutes in all, and {disk:.0f} GB of disk in {tempfile.gettempdir()} for part 3")
    with tempfile.TemporaryDirectory() as tmp:
        print("[1/3] 1 vs 2 processes on one grid (a few minutes) ...", flush=True)
        distributed_grid(Path(tmp))
        print("[2/3] LeNet grid against a per-point loop (a few minutes) ...", flush=True)
        lenet_grid()
        print(f"[3/3] recording {args.steps} steps of a 1M-parameter model to disk, then PCA ...", flush=True)
        record_big_path(args.steps, Path(tmp))


if __name__ == "__main__":
    main()
