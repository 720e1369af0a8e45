"""Top-2 Hessian eigenpairs: the default MLP on spirals, and LeNet-5 on 3,000 28x28 images.

Run: .venv/bin/python benchmarks/bench_hessian.py
Targets (issue 3): under 2 s for the MLP, under 60 s for LeNet. The images are random (the
cost does not depend on what they show); the labels are random classes.
"""

import time

import torch

from losstrail import MLP, LeNet, SpiralsDataModule, fit, hessian_eigenpairs
from losstrail.models import flat_params


def timed(model, data, label: str, target: float) -> None:
    start = time.perf_counter()
    eig = hessian_eigenpairs(model, data, flat_params(model).numpy(), 2, quiet=True)
    took = time.perf_counter() - start
    values = ", ".join(f"{v:.4g}" for v in eig.values)
    verdict = "met" if took < target else "NOT met"
    print(f"{label}: top-2 eigenvalues {values} in {took:.2f} s (target < {target:g} s: {verdict})")


def main() -> None:
    torch.manual_seed(0)
    dm = SpiralsDataModule()
    run = fit(MLP(2, 3), dm, epochs=300, quiet=True)
    timed(run.model, dm, f"MLP, P={sum(p.numel() for p in run.model.parameters())}, 1,110 spirals", 2)
    lenet = LeNet()
    images = (torch.randn(3000, 1, 28, 28), torch.randint(0, 10, (3000,)))
    timed(lenet, images, f"LeNet-5, P={sum(p.numel() for p in lenet.parameters())}, 3,000 28x28 images", 60)


if __name__ == "__main__":
    main()
