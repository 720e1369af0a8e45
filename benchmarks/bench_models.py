"""Grid points per second on real kinds of model: losstrail's loss_surface vs a plain load_state_dict loop.

Run: .venv/bin/python benchmarks/bench_models.py [--quick] [--images 32] [--repeats 3] [--models gpt,spirals]
Prints one table, all measured in this run on the same 100 points (a 10x10 grid on a random plane)
per model: a small GPT-2 (the example's, SDPA and eager attention, 64 windows of 32 tokens),
ResNet-18 on ``--images`` CIFAR-shaped images (default 32, so the table takes minutes, not an
hour, on two cores), and the spirals MLP (1,110 examples); for each, the points per second of
``loss_surface`` in mode auto, of mode='inplace' (each point set in the model's own tensors),
and of the plain loop a user would write (a copy of the model, ``load_state_dict`` each point,
forward in eval mode under no_grad), auto's speed-up over the plain loop, the way auto ended
on, and the GFLOP/s each reaches against this machine's float32 matmul peak (measured first,
with a 2048x2048 matmul). Aims (issue 23, item 4): auto never slower than the plain loop on grids
of 100 points or more; (issue 11) at least 2x on the GPT-2 with no slow-fallback warning.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from losstrail import MLP, Plane, loss_surface

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` float32 n x n matmuls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b)[0] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def forward_flops(model, batches, call) -> float:
    """FLOPs of one forward pass over all ``batches`` (what one grid point costs)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        for batch in batches:
            call(model, batch)
    return float(counter.get_total_flops())


def random_plane(model, seed=0) -> Plane:
    g = torch.Generator().manual_seed(seed)
    origin = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    u, v = (torch.randn(len(origin), generator=g) * 1e-2 for _ in range(2))
    return Plane(origin.numpy(), u.numpy(), v.numpy(), "random")


def load_state_dict_loop(model, batches, call, plane, xs, ys) -> np.ndarray:
    """The loop a user writes: a copy of the model, each point's full state dict loaded, forward under no_grad."""
    twin = copy.deepcopy(model).eval()
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    keys = {n: [k for k, t in model.state_dict(keep_vars=True).items() if t is params[n]] for n in names}
    shapes, sizes = [params[n].shape for n in names], [params[n].numel() for n in names]
    base = model.state_dict()
    grid = np.empty((len(ys), len(xs)))
    with torch.no_grad():
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                state = dict(base)
                flat = torch.from_numpy(plane.point(x, y))
                for n, piece, shape in zip(names, torch.split(flat, sizes), shapes):
                    for key in keys[n]:  # tied weights appear under each of their names
                        state[key] = piece.view(shape)
                twin.load_state_dict(state)
                total = sum(float(call(twin, b)) * _length(b) for b in batches)
                grid[i, j] = total / sum(_length(b) for b in batches)
    return grid


def _length(batch) -> int:
    return len(batch["input_ids"]) if isinstance(batch, dict) else len(batch[-1])


def ours(model, data, plane, xs, ys, batch_size, mode="auto"):
    """loss_surface in ``mode``; with the way it ended on and whether vmap warned of a slow fallback."""
    from losstrail.evaluation.evaluator import Evaluator

    err, ended, placed = io.StringIO(), [], []
    init, in_place = Evaluator.__init__, Evaluator.run_in_place

    def keep(self, *args, **kwargs):  # the evaluator loss_surface makes, to read the way it ended on
        init(self, *args, **kwargs)
        ended.append(self)

    def place(self, plane, coords, **kwargs):  # points set in place: how many
        placed.append(len(coords))
        return in_place(self, plane, coords, **kwargs)

    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        Evaluator.__init__, Evaluator.run_in_place = keep, place
        try:
            seconds, surface = _timed(
                lambda: loss_surface(model, data, plane, xs, ys, batch_size=batch_size, mode=mode, quiet=True)
            )
        finally:
            Evaluator.__init__, Evaluator.run_in_place = init, in_place
    n = len(xs) * len(ys)
    chosen = "inplace" if mode == "inplace" or sum(placed) * 2 > n else ended[0].ways.chosen
    slow = any("performance drop" in str(w.message) for w in caught)
    return seconds, surface.loss, chosen, slow


def bench(name, model, data, batches, call, n_side, batch_size, peak, repeats=1):
    """One row; with ``repeats`` > 1 the three are timed that many times, in alternating order, and each keeps
    its best time (load beside the run only ever slows a timing down)."""
    plane = random_plane(model)
    xs, ys = np.linspace(-1, 1, n_side[0]), np.linspace(-1, 1, n_side[1])
    n = len(xs) * len(ys)
    flops = forward_flops(model, batches, call)
    runs = {
        "auto": lambda: ours(model, data, plane, xs, ys, batch_size),
        "loop": lambda: _timed(lambda: load_state_dict_loop(model, batches, call, plane, xs, ys)),
        "inplace": lambda: ours(model, data, plane, xs, ys, batch_size, "inplace"),
    }
    best: dict = {}
    for r in range(repeats):
        for key in list(runs)[:: 1 if r % 2 == 0 else -1]:
            got = runs[key]()
            if key not in best or got[0] < best[key][0]:
                best[key] = got
    (t_ours, loss_ours, chosen, slow), (t_loop, loss_loop), (t_place, loss_place, _, _) = (
        best["auto"], best["loop"], best["inplace"])  # fmt: skip
    error = max(float(np.max(np.abs(ours_ - loss_loop) / np.maximum(np.abs(loss_loop), 1e-12)))
                for ours_ in (loss_ours, loss_place))  # fmt: skip
    pps_ours, pps_loop, pps_place = n / t_ours, n / t_loop, n / t_place
    row = (
        f"{name:<34} {n:>6} {pps_ours:>10.1f} {pps_place:>10.1f} {pps_loop:>10.1f} {pps_ours / pps_loop:>7.2f}x"
        f" {chosen:>15}{' (slow-fallback)' if slow else '':<16} {flops * pps_ours / 1e9:>8.1f}"
        f" {flops * pps_loop / 1e9:>8.1f} {100 * flops * pps_ours / 1e9 / peak:>6.1f}% {error:>9.1e}"
    )
    print(row, flush=True)
    return pps_ours / pps_loop


def hf_call(model, batch):
    return model(**batch).loss


def ce_call(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points (a smoke run)")
    parser.add_argument("--images", type=int, default=32, help="ResNet-18's CIFAR-shaped images")
    parser.add_argument("--repeats", type=int, default=1, help="time each this many times, alternating; keep the best")
    parser.add_argument("--models", default="", help="only the models whose names contain one of these words (commas)")
    args = parser.parse_args()
    words = [w.strip().lower() for w in args.models.split(",") if w.strip()]

    def wanted(name: str) -> bool:
        return not words or any(w in name.lower() for w in words)

    torch.manual_seed(0)
    peak = matmul_peak()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 matmul peak {peak:.1f} GFLOP/s; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(f"{'model':<34} {'points':>6} {'auto pt/s':>10} {'inpl. pt/s':>10} {'loop pt/s':>10} {'vs loop':>8}"
          f" {'auto ended on':>15}{'':<16}"
          f" {'ours GF/s':>8} {'loop GF/s':>8} {'% peak':>7} {'max rel.diff':>9}")  # fmt: skip

    from gpt2_tiny import corpus, tiny_gpt2

    data, chars = corpus(64, seed=1)
    side = (4, 4) if args.quick else (10, 10)
    speedups = []
    for attention in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = tiny_gpt2(len(chars), attention)
        if wanted(f"GPT-2 {attention}"):
            speedups.append(bench(f"GPT-2 2x32, 64 seq x 32 tok, {attention}", model, data, [data], hf_call, side,
                                  64, peak, args.repeats))  # fmt: skip

    from resnet import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    g = torch.Generator().manual_seed(0)
    n = args.images
    X, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    side = (2, 2) if args.quick else (10, 10)
    if wanted("ResNet"):
        speedups.append(bench(f"ResNet-18 11.2M, {n} CIFAR images", model, (X, y), [(X, y)], ce_call, side, n, peak,
                              args.repeats))  # fmt: skip

    from losstrail import SpiralsDataModule

    torch.manual_seed(0)
    X, y = SpiralsDataModule().dataset.tensors
    side = (4, 4) if args.quick else (10, 10)
    if wanted("spirals"):
        speedups.append(bench("spirals MLP (default)", MLP(2, 3), (X, y), [(X, y)], ce_call, side, 4096, peak,
                              args.repeats))  # fmt: skip
    print(
        f"\nauto / plain loop: {min(speedups):.2f}-{max(speedups):.2f}x; target never slower: "
        f"{'met' if min(speedups) >= 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
