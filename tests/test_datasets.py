"""The built-in datasets beyond spirals: moons, digits and MNIST (from small IDX files written here)."""

import gzip
import struct

import numpy as np
import pytest
import torch

from losstrail.builtin.data import DigitsDataModule, MNISTDataModule, MoonsDataModule, make_datamodule
from losstrail.builtin.mnist import load_mnist, read_idx
from losstrail.builtin.models import make_model


def _write_idx(path, array, magic, compress):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (50, 28, 28)), rng.integers(0, 10, 50)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, 0x803, compress=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, 0x801, compress=False)
    return tmp_path, images, labels


def test_mnist_reads_the_idx_files(mnist_dir):
    folder, images, labels = mnist_dir
    X, y = load_mnist(folder, n_examples=20, download=False)
    assert X.shape == (20, 1, 28, 28) and y.tolist() == labels[:20].tolist()
    np.testing.assert_allclose(X[3, 0].numpy(), (images[3] / 255.0 - 0.1307) / 0.3081, rtol=1e-5)
    dm = MNISTDataModule(batch_size=16, n_examples=30, data_dir=folder, download=False)
    assert len(dm.dataset) == 30 and dm.steps_per_epoch == 2


def test_corrupt_mnist_files_are_named(mnist_dir):
    folder, _, labels = mnist_dir
    bad = folder / "train-labels-idx1-ubyte"
    _write_idx(bad, labels, 0x803, compress=False)  # an images magic number on the labels file
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte has magic number 0x00000803, expected 0x00000801"):
        load_mnist(folder, download=False)
    bad.write_bytes(struct.pack(">II", 0x801, 50) + bytes(10))
    with pytest.raises(
        ValueError, match=r"should hold 50 bytes of data for shape \(50,\) but holds 10; it is truncated"
    ):
        read_idx(bad)


def test_missing_mnist_says_where_to_put_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST file train-images-idx3-ubyte\(.gz\) is not in .*put it there"):
        load_mnist(tmp_path / "nothing", download=False)


def test_moons_and_digits(tmp_path):
    moons = MoonsDataModule(n_examples=200)
    X, y = moons.dataset.tensors
    assert X.shape == (200, 2) and y.float().mean() == 0.5
    pytest.importorskip("sklearn")
    digits = DigitsDataModule()
    X, y = digits.dataset.tensors
    assert X.shape == (1797, 1, 8, 8) and float(X.min()) >= 0 and float(X.max()) <= 1 and int(y.max()) == 9
    lenet = make_model("lenet", digits)
    assert lenet(X[:4]).shape == (4, 10)
    assert make_model("mlp", make_datamodule("digits"))(X[:2]).shape == (2, 10)
    with pytest.raises(ValueError, match=r"model='lenet' needs image data"):
        make_model("lenet", moons)


def test_the_reference_lenet_example_runs(mnist_dir, tmp_path):
    import losstrail
    from losstrail import LeNet

    folder, _, _ = mnist_dir
    datamodule = MNISTDataModule(batch_size=16, n_examples=48, data_dir=folder, download=False)
    torch.manual_seed(0)
    model = LeNet(learning_rate=1e-3)
    optim_path, loss_steps, accu_steps = losstrail.loss_landscape_anim(
        n_epochs=1, model=model, datamodule=datamodule, optimizer="adam", giffps=15, seed=0, load_model=False,
        output_to_file=True, output_filename=tmp_path / "lenet.gif", model_dirpath=tmp_path / "run",
        resolution=4, return_data=True, quiet=True,
    )  # fmt: skip
    assert len(optim_path) == len(loss_steps) == len(accu_steps) == 4  # 3 steps + the end
