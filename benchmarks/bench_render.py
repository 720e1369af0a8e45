"""Rendering speed at 900x600 (GIF and MP4, encoding included), the turning 3-D GIF, the 300-frame HTML page,
and the whole `losstrail render RUN_DIR` command on a saved run.

Run: .venv/bin/python benchmarks/bench_render.py
Targets (issues 2, 5, 15 and 16): GIF and MP4 at least 60 frames per second; the turning 3-D GIF
near the 2-D GIF's size and speed; the HTML page under 5 MB and open (plot drawn, player
ready) in under 2 s in headless Chromium; `losstrail render RUN_DIR --out x.png` and
`--out x.html` at most 2 s each, whole process (it imports neither torch nor Lightning).
"""

import os
import shutil
import subprocess
import sys
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


def frames_per_second(proj, surface, out: Path, frames: int, repeats: int, **style) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        animate(proj, surface, out, max_frames=frames, quiet=True, **style)
        times.append(time.perf_counter() - start)
    return frames / min(times), out.stat().st_size / 1e6


def html_open_seconds(path: Path) -> float | None:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_function("window.losstrail !== undefined && document.querySelector('.main-svg') !== null")
        took = time.perf_counter() - start
        browser.close()
    return took


def render_command() -> list[str]:
    """The ``losstrail`` console script beside this Python (what a user runs), else ``python -m losstrail``."""
    script = Path(sys.executable).with_name("losstrail")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "losstrail"]


def process_seconds(command: list[str], cwd: str) -> float:
    """Wall time of ``command`` run in ``cwd`` with this losstrail (the one this script imports) first on the path."""
    import losstrail

    env = {**os.environ, "PYTHONPATH": str(Path(losstrail.__file__).resolve().parents[1])}
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def rerender_seconds(repeats: int = 3) -> None:
    """Whole-process wall time of `losstrail render RUN_DIR --out x.png` and `x.html` on the default job's saved run."""
    import losstrail

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        losstrail.loss_landscape_anim(n_epochs=300, model_dirpath=run_dir, output_filename=Path(tmp) / "first.gif",
                                      seed=0, quiet=True)  # fmt: skip
        floor = min(process_seconds([sys.executable, "-c", "pass"], tmp) for _ in range(3))
        heavy = process_seconds([sys.executable, "-c", "import torch, lightning.pytorch"], tmp)
        walls = {"png": [], "html": []}
        for _ in range(repeats):  # interleaved, so both see the same machine load
            for kind in walls:
                command = [*render_command(), "render", str(run_dir), "--out", str(Path(tmp) / f"x.{kind}"), "-q"]
                walls[kind].append(process_seconds(command, tmp))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"losstrail render RUN_DIR (the default job's run), whole process, {os.cpu_count()} cores, load {load:.1f}:")
    for kind, times in walls.items():
        best = min(times)
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"  --out x.{kind}: best {best:.2f} s of {runs} (target <= 2 s: {'met' if best <= 2 else 'NOT met'})")
    print(f"  for scale: python -c pass {floor:.2f} s; import torch, lightning.pytorch {heavy:.2f} s (no longer paid)")


def main(frames: int = 300, repeats: int = 3) -> None:
    proj, surface = scene()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("gif", "mp4"):
            fps, mb = frames_per_second(proj, surface, Path(tmp) / f"bench.{kind}", frames, repeats)
            verdict = "met" if fps >= 60 else "NOT met"
            print(f"{kind.upper()} 900x600, {frames} frames: {fps:.0f} frames/s, {mb:.1f} MB (target >= 60: {verdict})")
            if kind == "gif":
                flat = (fps, mb)
        fps, mb = frames_per_second(proj, surface, Path(tmp) / "turning.gif", frames, 1, view="3d", rotate=True)
        print(
            f"GIF 3-D turning 900x700, {frames} frames: {fps:.0f} frames/s, {mb:.1f} MB "
            f"({flat[0] / fps:.1f}x the 2-D GIF's time, {mb / flat[1]:.1f}x its size)"
        )
        page = Path(tmp) / "bench.html"
        animate(proj, surface, page, max_frames=frames, quiet=True)
        mb = page.stat().st_size / 1e6
        took = html_open_seconds(page)
        opened = (
            "no browser here"
            if took is None
            else f"opens in {took:.2f} s (target < 2 s: {'met' if took < 2 else 'NOT met'})"
        )
        print(f"HTML, {frames} frames: {mb:.2f} MB (target < 5 MB: {'met' if mb < 5 else 'NOT met'}), {opened}")
    rerender_seconds()


if __name__ == "__main__":
    main()
