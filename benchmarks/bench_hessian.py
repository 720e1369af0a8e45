"""Top-2 Hessian eigenpairs: the default MLP on spirals, and LeNet-5 on 3,000 28x28 images; with ``--big``,
the Hessian plane around a 29.4M-parameter MLP, its time and its peak memory against the model's bytes.

Run: .venv/bin/python benchmarks/bench_hessian.py          (the two timings)
     timeout 900 .venv/bin/python benchmarks/bench_hessian.py --big   (one JSON line; --width, --depth)
Targets (issue 3): under 2 s for the MLP, under 60 s for LeNet. The images are random (the
cost does not depend on what they show); the labels are random classes. Issue 21: the big model's
plane stays within the model, its Lanczos basis (at most the larger of 1 GiB and twice the model) and
one Hessian-vector product's work; ``--big`` runs under bench_big's resident-memory watchdog (``--limit-gb``).
"""

import argparse
import json
import time

import torch

from losstrail import MLP, LeNet, SpiralsDataModule, fit, hessian_eigenpairs, make_plane


def timed(model, data, label: str, target: float) -> None:
    start = time.perf_counter()
    eig = hessian_eigenpairs(model, data, k=2, quiet=True)
    took = time.perf_counter() - start
    values = ", ".join(f"{v:.4g}" for v in eig.values)
    verdict = "met" if took < target else "NOT met"
    print(f"{label}: top-2 eigenvalues {values} in {took:.2f} s (target < {target:g} s: {verdict})")


def big(width: int, depth: int, limit_gb: float) -> dict:
    """The Hessian plane around a ``depth`` x (``width`` x ``width``) tanh MLP on 16 examples, in this process."""
    from bench_big import peak_rss, watchdog

    watchdog(int(limit_gb * 2**30))
    torch.manual_seed(0)
    X, y = torch.randn(16, width), torch.randint(0, 10, (16,))
    base = peak_rss()  # torch, losstrail and the data loaded; no model yet
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    start = time.perf_counter()
    plane = make_plane(model, "hessian", data=(X, y), seed=0, quiet=False)
    took = time.perf_counter() - start
    peak = peak_rss() - base
    return {"P": sum(p.numel() for p in model.parameters()), "model_bytes": params, "plane_s": round(took, 1),
            "eigenvalues": [round(v, 4) for v in plane.eigenvalues], "peak_above_start": peak,
            "peak_over_model": round(peak / params, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="the Hessian plane around a big MLP, with its memory")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=7, help="hidden layers (7 x 2048: 29.4M parameters)")
    parser.add_argument("--limit-gb", type=float, default=4.0, help="resident memory at which --big stops")
    args = parser.parse_args()
    if args.big:
        print(json.dumps(big(args.width, args.depth, args.limit_gb)), flush=True)
        return
    torch.manual_seed(0)
    dm = SpiralsDataModule()
    run = fit(MLP(2, 3), dm, epochs=300, quiet=True)
    timed(run.model, dm, f"MLP, P={sum(p.numel() for p in run.model.parameters())}, 1,110 spirals", 2)
    lenet = LeNet()
    images = (torch.randn(3000, 1, 28, 28), torch.randint(0, 10, (3000,)))
    timed(lenet, images, f"LeNet-5, P={sum(p.numel() for p in lenet.parameters())}, 3,000 28x28 images", 60)


if __name__ == "__main__":
    main()
