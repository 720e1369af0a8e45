"""Issue 21 (d): the path of a 5.25M-parameter MLP trained 2,000 steps, recorded with ``Recorder(model)``'s defaults.

Prints, measured side by side in one run:
- the training loop's time without recording and with it (goal: recording adds at most 50%);
- seconds for the PCA plane and the projection of the path (goal: at most 30 s together);
- the most bytes the recording had on disk, and what the trajectory keeps (goal: at most 2 GB);
- peak resident memory of the process, and over the two training loops alone (goal: recording
  holds at most the model + 1 GiB more).

The plain and the recorded loop train two copies of the model in turns of ``--block`` steps, so
both see the same load on a shared machine. Torch runs one thread by default: on two cores shared
with other jobs, two threads spin against each other and the plain step took 0.5–1.4 s instead
of about 0.1 s (measured side by side at load 5–10), which hides what recording costs.

A watchdog thread stops the run if the process passes ``--max-rss`` GB; run it under ``timeout``:

    timeout 3600 python benchmarks/bench_big_path.py            # 2,000 steps, about 20 min on 2 busy cores
    python benchmarks/bench_big_path.py --steps 300             # a quicker look
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import resource
import tempfile
import threading
import time

import torch

from losstrail.planes.directions import make_plane
from losstrail.planes.projection import project
from losstrail.training.record import Recorder

GIB = 1 << 30


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Watch(threading.Thread):
    """Polls resident memory (stops the process past a limit) and the recorder's bytes on disk."""

    def __init__(self, max_rss: float):
        super().__init__(daemon=True)
        self.max_rss, self.disk, self.stopped = max_rss, 0, False
        self.others = set(glob.glob(os.path.join(tempfile.gettempdir(), "losstrail-path-*")))  # not this run's

    def run(self):
        while not self.stopped:
            if rss() > self.max_rss:
                print(f"WATCHDOG: resident memory {rss() / GIB:.1f} GiB passed {self.max_rss / GIB:.1f} GiB; stopping")
                os._exit(3)
            used = 0
            for folder in set(glob.glob(os.path.join(tempfile.gettempdir(), "losstrail-path-*"))) - self.others:
                for name in glob.glob(os.path.join(folder, "*")):
                    with contextlib.suppress(OSError):
                        used += os.stat(name).st_blocks * 512
            self.disk = max(self.disk, used)
            time.sleep(0.2)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(1024, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 1536), torch.nn.ReLU(),
        torch.nn.Linear(1536, 10),
    )  # fmt: skip


def make_batches(n: int, size: int):
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(1024, 10, generator=g)
    out = []
    for _ in range(n):
        x = torch.randn(size, 1024, generator=g)
        out.append((x, (x @ teacher).argmax(1)))
    return out


class Loop:
    """One training run, advanced a block of steps at a time so two runs share the machine's load evenly."""

    def __init__(self, batches):
        self.model, self.batches, self.k, self.seconds = make_model(), batches, 0, 0.0
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.recorder = None

    def record(self, **options) -> None:
        """Record from here on (after the warm-up: the gradients and momentum are the training's, not the path's)."""
        self.recorder = Recorder(self.model, **options)

    def advance(self, steps: int) -> None:
        start = time.perf_counter()
        for _ in range(steps):
            x, y = self.batches[self.k % len(self.batches)]
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            if self.recorder is not None:
                self.recorder.record(loss=loss.detach())
            self.k += 1
        self.seconds += time.perf_counter() - start

    def trajectory(self):
        start = time.perf_counter()
        trajectory = self.recorder.trajectory
        self.seconds += time.perf_counter() - start
        return trajectory


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--block", type=int, default=25, help="steps each loop runs before the other's turn")
    parser.add_argument("--max-rss", type=float, default=6.0, help="GB of resident memory that stops the run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see the docstring)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    watch = Watch(args.max_rss * GIB)
    watch.start()
    batches = make_batches(16, args.batch)
    n_params = sum(p.numel() for p in make_model().parameters())
    print(f"{n_params:,} parameters ({n_params * 4 / 1e6:.0f} MB), {args.steps} steps of {args.batch} examples, "
          f"{torch.get_num_threads()} threads")  # fmt: skip

    plain, recorded = Loop(batches), Loop(batches)
    plain.advance(2)  # warm up the allocator and kernels, and allocate both runs' gradients and momentum
    recorded.advance(2)
    plain.seconds = recorded.seconds = 0.0
    before = rss()  # both models, their gradients and momentum: what is above this is the recording's
    recorded.record()  # Recorder(model) with its defaults
    for done in range(0, args.steps, args.block):  # the two loops take turns, a block of steps each
        steps = min(args.block, args.steps - done)
        plain.advance(steps)
        recorded.advance(steps)
        if (done + steps) % 250 == 0 or done + steps == args.steps:
            print(f"  step {done + steps}: plain {plain.seconds:.0f} s, recorded {recorded.seconds:.0f} s", flush=True)
    trajectory = recorded.trajectory()
    peak = peak_rss()
    plain, recorded = plain.seconds, recorded.seconds
    start = time.perf_counter()
    plane = make_plane(trajectory, "pca")
    pca = time.perf_counter() - start
    start = time.perf_counter()
    path = project(plane, trajectory)
    projection = time.perf_counter() - start
    watch.stopped = True
    sketch = trajectory.sketch
    kept = trajectory.params.nbytes
    print("results:")
    print(f"  training loop: {plain:.1f} s plain, {recorded:.1f} s recorded: ratio {recorded / plain:.2f} "
          f"(recording adds {100 * (recorded / plain - 1):.0f}%; goal <= 50%)")  # fmt: skip
    print(f"  PCA {pca:.1f} s + projection {projection:.1f} s = {pca + projection:.1f} s (goal <= 30 s); "
          f"explained {plane.explained[0]:.3f}, {plane.explained[1]:.3f}; {len(path)} points projected")  # fmt: skip
    if sketch is not None:
        print(f"  kept: {len(trajectory)} {trajectory.params.dtype} snapshots of {len(sketch)} steps, every step's "
              f"loss; sketch angle bound {sketch.angle_bound:.3f} degrees")  # fmt: skip
    print(f"  on disk: at most {watch.disk / 1e9:.2f} GB while recording, {kept / 1e9:.2f} GB kept (goal <= 2 GB)")
    print(f"  peak resident memory {peak_rss() / GIB:.2f} GiB for the whole run; the recording's own "
          f"{(peak - before) / GIB:.2f} GiB above the two loops before it started (goal <= 1 GiB)")  # fmt: skip


if __name__ == "__main__":
    main()
