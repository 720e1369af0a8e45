"""Four optimizers x 300 epochs on spirals, one shared PCA plane, 100x100 grid, 300-frame GIF.

Run: .venv/bin/python benchmarks/bench_compare.py
Target (issue 4): under 20 s on this machine, the grid computed once for all runs. Prints
the phases (from the progress of one call) and the whole call's wall time, imports excluded.
"""

import tempfile
import time
from pathlib import Path

import losstrail
from losstrail import comparison as module


def main() -> None:
    phases = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    original_view, original_render = module._shared_view, module.render_comparison
    module._shared_view = timed("plane, true losses, grid", original_view)
    module.render_comparison = timed("render 300-frame GIF", original_render)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        comparison = losstrail.compare(
            optimizers=["adam", "sgd", "adagrad", "rmsprop"],
            epochs=300,
            out=Path(tmp) / "compare.gif",
            run_dir=Path(tmp) / "cmp",
            quiet=True,
        )
        wall = time.perf_counter() - start
    rest = wall - sum(phases.values())
    for name, seconds in [*phases.items(), ("training and saving", rest)]:
        print(f"  {name:<26s} {seconds:6.2f} s")
    shares = ", ".join(f"{n} {c:.0%}" for n, c in zip(comparison.names, comparison.captured))
    print(f"captured by the shared plane: {shares}")
    print(f"compare(4 optimizers): {wall:.2f} s (target < 20 s: {'met' if wall < 20 else 'NOT met'})")


if __name__ == "__main__":
    main()
