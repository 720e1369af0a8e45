"""Rendering speed of a 900x600 GIF, encoding included, in frames per second.

Run: .venv/bin/python benchmarks/bench_render.py
Target (issue 2): at least 60 frames per second.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from losstrail import Plane, Surface, Trajectory, animate, project


def scene(t: int = 301):
    s = np.linspace(0, 1, t)
    params = np.zeros((t, 4), np.float32)
    params[:, 0], params[:, 1] = -3 * (1 - s), np.sin(4 * s) * (1 - s)
    plane = Plane(
        np.zeros(4, np.float32), np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1], "pca", (0.9, 0.05)
    )
    traj = Trajectory(params, np.exp(-3 * s), s, np.arange(t), np.arange(t))
    xs, ys = np.linspace(-4, 1, 100), np.linspace(-2, 2, 100)
    gx, gy = np.meshgrid(xs, ys)
    return project(plane, traj), Surface(xs, ys, 0.05 + gx**2 + 2 * gy**2 + 0.3 * np.sin(3 * gx), np.zeros_like(gx))


def main(frames: int = 300, repeats: int = 3) -> None:
    proj, surface = scene()
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = animate(proj, surface, Path(tmp) / "bench.gif", max_frames=frames, quiet=True)
            times.append(time.perf_counter() - start)
        size = out.stat().st_size
    fps = frames / min(times)
    print(f"GIF 900x600, {frames} frames: best {min(times):.2f} s -> {fps:.0f} frames/s, {size / 1e6:.1f} MB")
    print(f"  target >= 60 frames/s: {'met' if fps >= 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
