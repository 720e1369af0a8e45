"""The article's comparison: Adam, SGD, Adagrad and RMSprop from the same weights on one landscape.

Run: .venv/bin/python examples/compare_optimizers.py
Writes docs/compare-adam.gif and docs/compare-rmsprop.gif: the same two random directions,
centred first on Adam's end point and then on RMSprop's, as in the article. The contours
differ because they are two parallel slices; the loss curves beside them do not.
"""

from pathlib import Path

import losstrail

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main() -> None:
    for centre in ("adam", "rmsprop"):
        losstrail.compare(
            optimizers=["adam", "sgd", "adagrad", "rmsprop"],
            epochs=300,
            seed=0,
            reduction_method="random",
            centre=centre,
            n_frames=100,
            out=DOCS / f"compare-{centre}.gif",
            run_dir=f"checkpoints/compare-{centre}",
            title=f"Four optimizers from the same weights; two random directions centred on {centre}'s end point",
        )


if __name__ == "__main__":
    main()
