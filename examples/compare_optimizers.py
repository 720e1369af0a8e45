"""The article's comparison: Adam, SGD, Adagrad and RMSprop from the same weights on one landscape.

Run: .venv/bin/python examples/compare_optimizers.py [OUT_DIR]   (default: gallery/; pass docs to refresh the README's)
Writes compare-adam.gif and compare-rmsprop.gif: the same two random directions,
centred first on Adam's end point and then on RMSprop's, as in the article. The contours
differ because they are two parallel slices; the loss curves beside them do not.
"""

import sys
from pathlib import Path

import losstrail


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gallery")
    out.mkdir(parents=True, exist_ok=True)
    for centre in ("adam", "rmsprop"):
        losstrail.compare(
            optimizers=["adam", "sgd", "adagrad", "rmsprop"],
            epochs=300,
            seed=0,
            reduction_method="random",
            centre=centre,
            n_frames=100,
            out=out / f"compare-{centre}.gif",
            run_dir=f"checkpoints/compare-{centre}",
            title=f"Four optimizers from the same weights; two random directions centred on {centre}'s end point",
        )


if __name__ == "__main__":
    main()
