"""The grid's cost as first stated, against the time the grid took: four kinds of model, quiet and beside a CPU hog.

Run: .venv/bin/python benchmarks/bench_estimates.py [--runs 2] [--busy both|yes|no] [--jobs spirals,gpt]
Target (issue 23): the first statement within 2x of the actual time (0.5-2.0 below), on the
spirals MLP, LeNet on the 8x8 digits, a small GPT-2 (2 layers of width 32, random init from a
GPT2Config, 64 windows of 32 characters) and a BatchNorm CNN (two conv+BatchNorm blocks on the
digits), each in mode='auto', each run quiet and then beside one competing CPU-bound process.

The statement is what ``loss_surface`` says (``evaluation.grids._say_the_cost``): the callback the grid
calls after each unit of work once the way is chosen, at the pace measured since then. A grid that took
under ``SHORT`` (5) seconds and stated nothing is not counted (``loss_surface`` prints a statement only
for a grid of more than 5 s); one that took longer and said nothing counts as a miss. It is
said again when the pace moves the whole by 2x or more; the last said is shown too. Grids are
small enough that a run takes seconds to a minute (sizes in the table); spirals and LeNet are on
a random plane around their trained weights, GPT-2 and the CNN around their initial weights.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from losstrail import MLP, Plane
from losstrail.builtin.data import DigitsDataModule, SpiralsDataModule
from losstrail.builtin.nets import LeNet
from losstrail.evaluation.evaluator import Evaluator
from losstrail.evaluation.grids import evaluate_grid
from losstrail.training.fit import fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
HOG = "import itertools\nfor _ in itertools.count(): pass"
# loss_surface says the cost only of a grid that will take longer than this (evaluation.grids._say_the_cost): a grid
# that ends sooner may say nothing.
SHORT = 5.0


def random_plane(model, scale: float = 0.5, seed: int = 0) -> Plane:
    g = torch.Generator().manual_seed(seed)
    origin = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    u, v = (torch.randn(len(origin), generator=g) * scale * origin.norm() / len(origin) ** 0.5 for _ in range(2))
    return Plane(origin.numpy(), u.numpy(), v.numpy(), "random")


def bn_cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 10),
    )  # fmt: skip


def jobs():
    """``(name, model, data, side)`` of each job."""
    torch.manual_seed(0)
    spirals = SpiralsDataModule()
    yield "spirals MLP", fit(MLP(2, 3), spirals, epochs=100, seed=0, quiet=True).model, spirals, 50
    digits = DigitsDataModule()
    yield "LeNet, 8x8 digits", fit(LeNet(input_size=8), digits, epochs=3, seed=0, quiet=True).model, digits, 16
    from gpt2_tiny import corpus, tiny_gpt2

    batch, chars = corpus(64, seed=1)
    torch.manual_seed(0)
    yield "GPT-2 2x32, 64 x 32 tokens", tiny_gpt2(len(chars), "sdpa"), batch, 10
    X, y = digits.dataset.tensors
    torch.manual_seed(0)
    yield "BatchNorm CNN, 8x8 digits", bn_cnn(), (X, y), 16


def measured(model, data, side: int):
    """``(seconds, [each cost stated, in order])`` of a ``side`` x ``side`` grid in mode auto."""
    plane = random_plane(model)
    xs = ys = np.linspace(-1, 1, side)
    points, stated = side * side, []

    def said(seconds, chunk):  # as evaluation.grids._say_the_cost: the first, then each that moves the whole by 2x
        total = seconds * points / chunk
        if not stated or not 0.5 < total / stated[-1] < 2:
            stated.append(total)

    start = time.perf_counter()
    evaluator = Evaluator(model, data, mode="auto", quiet=True)
    evaluate_grid(evaluator, plane, xs, ys, on_first_chunk=said)
    return time.perf_counter() - start, stated, evaluator.ways.chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--busy", choices=("both", "yes", "no"), default="both")
    parser.add_argument("--jobs", default="", help="only the jobs whose names contain one of these words (commas)")
    args = parser.parse_args()
    conditions = {"both": (False, True), "yes": (True,), "no": (False,)}[args.busy]
    words = [w.strip().lower() for w in args.jobs.split(",") if w.strip()]
    prepared = [j for j in jobs() if not words or any(w in j[0].lower() for w in words)]
    print(f"{'job':<28} {'grid':>6} {'load':>5} {'hog':>4} {'actual':>8} {'first said':>10} {'first/actual':>12}"
          f" {'last said/actual':>16}  way")  # fmt: skip
    firsts = []
    for busy in conditions:
        hog = subprocess.Popen([sys.executable, "-c", HOG]) if busy else None
        try:
            for name, model, data, side in prepared:
                for _ in range(args.runs):
                    seconds, stated, way = measured(model, data, side)
                    first = stated[0] / seconds if stated else float("nan")
                    last = stated[-1] / seconds if stated else float("nan")
                    if stated or seconds > SHORT:  # a grid of a few seconds need not say anything
                        firsts.append(first)
                    print(f"{name:<28} {side:>3}x{side:<3} {os.getloadavg()[0]:>4.1f} {'yes' if busy else 'no':>4}"
                          f" {seconds:>7.2f}s {stated[0] if stated else float('nan'):>9.2f}s {first:>11.2f}x"
                          f" {last:>15.2f}x  {way}", flush=True)  # fmt: skip
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    inside = all(0.5 <= f <= 2 for f in firsts)  # NaN (nothing said by a grid over SHORT seconds) is outside
    if not firsts:
        print("no grid took long enough to need a statement")
        return
    print(f"first statement / actual: {min(firsts):.2f}-{max(firsts):.2f}x over {len(firsts)} runs; "
          f"target within 2x: {'met' if inside else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
