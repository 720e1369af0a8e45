"""Every size bounded before work: one memory estimate, an error with it and the machine's available memory.

Issue 20, class 4. ``--hidden-layers 100000`` used to train for five minutes into an
out-of-memory kill, leaving a staging folder and a lock. Every size the CLI and the API take
goes through ``_checks.check_memory`` and fails before anything is built or trained.
"""

import inspect
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from losstrail.cli import app

runner = CliRunner()
GIB = 1 << 30


@pytest.fixture
def machine_of_24_gib(monkeypatch):
    """The machine says 24 GiB are available, whatever this one has; and nothing may train."""
    monkeypatch.setattr("losstrail._checks.available_memory", lambda: 24 * GIB)

    def no_training(*args, **kwargs):
        raise AssertionError("a size check let training start")

    monkeypatch.setattr("losstrail.training.fit.train_model", no_training)


def _left(folder):
    return sorted(p.name for p in folder.rglob("*"))


def _refused(args, folder, *phrases):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    assert _left(folder) == [], "a refused command left files, a staging folder or a lock behind"
    return lines[0]


def test_a_hundred_thousand_hidden_layers_are_refused_with_the_estimate(tmp_path, machine_of_24_gib):
    from losstrail._checks import mlp_parameters

    args = ["run", "--hidden-layers", "100000", "--run-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "x.gif")]
    phrases = ("--hidden-layers=100000", "--hidden-dim=50", "which needs about", "GiB of memory",
               "this machine has 24.0 GiB available", "Pass at most --hidden-layers=")  # fmt: skip
    line = _refused(args, tmp_path, *phrases)
    assert f"a model of {mlp_parameters(2, 50, 100000, 3):,} parameters" in line
    assert "trained on batches of 1,110 examples for 301 recorded steps" in line
    assert "num_hidden_layers" not in line and "hidden_dim=" not in line.replace("--hidden-dim=", "")
    suggested = int(line.split("Pass at most --hidden-layers=")[1].split()[0])
    assert 1 <= suggested < 100000
    # The suggestion fits, one more layer does not.
    from losstrail._checks import check_builtin_run

    sizes = {"hidden_dim": 50, "batch_size": None, "n_epochs": 300, "max_frames": 300, "decision": False}
    check_builtin_run("spirals", "mlp", num_hidden_layers=suggested, **sizes)
    with pytest.raises(ValueError, match=f"num_hidden_layers={suggested + 1}, "):
        check_builtin_run("spirals", "mlp", num_hidden_layers=suggested + 1, **sizes)


def test_the_estimate_counts_the_parameters_the_model_has():
    from losstrail._checks import mlp_parameters
    from losstrail.builtin.models import MLP

    for input_dim, hidden, layers, classes in ((2, 50, 1, 3), (64, 7, 3, 10), (784, 3, 0, 10)):
        model = MLP(input_dim, classes, hidden_dim=hidden, num_hidden_layers=layers)
        assert mlp_parameters(input_dim, hidden, layers, classes) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (["--hidden-dim", "10000000"], ["--hidden-dim=10000000", "activations", "Pass a smaller --hidden-dim="]),
        (["--resolution", "100000"], ["--resolution=100000 is a grid of 10,000,000,000 points", "Pass at most"]),
        (["--resolution", "3x100000000000"], ["--resolution=(3, 100000000000) is a grid of 300,000,000,000 points"]),
        (["--epochs", "1000000000"], ["--epochs=1000000000", "1,000,000,001 recorded steps", "recorded path"]),
        (
            ["--dataset", "mnist", "--batch-size", "1", "--epochs", "100000"],
            ["--batch-size=1", "--epochs=100000", "300,000,001 recorded steps"],
        ),
        (["--model", "lenet", "--dataset", "digits", "--epochs", "1000000000"], ["--epochs=1000000000"]),
    ],
)
def test_every_size_of_run_is_refused_before_anything_is_built(tmp_path, machine_of_24_gib, args, phrases):
    command = ["run", *args, "--run-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "x.gif")]
    _refused(command, tmp_path, "which needs about", "of memory", "this machine has 24.0 GiB available", *phrases)


def test_the_recorded_path_must_fit_on_the_disk(tmp_path, machine_of_24_gib, monkeypatch):
    from losstrail._checks import size_text

    monkeypatch.setattr("losstrail._checks.free_disk", lambda folder: 100 << 20)  # 100 MiB free
    args = ["run", "--model", "lenet", "--dataset", "digits", "--batch-size", "64", "--epochs", "30"]
    line = _refused(args + ["--run-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "x.gif")], tmp_path,
                    "--epochs=30", "for 871 recorded steps, whose recorded path takes about "
                    f"{size_text(871 * 61706 * 4)} of disk",
                    f"in {str(tmp_path / 'ck')!r}; that disk has 100.0 MiB free")  # fmt: skip
    assert "a model of 61,706 parameters" in line


def test_the_frames_and_decision_maps_are_counted_up_to_the_steps():
    from losstrail._checks import BYTES_PER_STEP, training_bytes

    frames = training_bytes(1000, steps=50, frames=10**9)["frames"]
    assert frames == 50 * BYTES_PER_STEP  # no more frames than recorded steps
    with_maps = training_bytes(1000, steps=50, frames=10**9, decision=True)["frames"]
    assert with_maps == 50 * (BYTES_PER_STEP + 1000 * 4 + 80 * 80)  # each frame's parameters and decision map


def test_surface_resolution_and_figure_size_are_refused(tmp_path, machine_of_24_gib, monkeypatch):
    _refused(["surface", str(tmp_path / "nothing"), "--resolution", "100000"], tmp_path,
             "--resolution=100000 is a grid of", "this machine has 24.0 GiB")  # fmt: skip
    from losstrail._checks import MAX_SIDE

    side = MAX_SIDE
    monkeypatch.setattr("losstrail._checks.available_memory", lambda: 8 * GIB)  # the largest figure takes 8 GiB
    _refused(["render", str(tmp_path), "--size", f"{side}x{side}", "--out", str(tmp_path / "x.png")], tmp_path,
             f"--size=({side}, {side}) is a figure of {side * side:,} pixels", "this machine has 8.0 GiB")  # fmt: skip


def test_compare_epochs_are_refused_before_the_first_run_trains(tmp_path, machine_of_24_gib):
    _refused(["compare", "--epochs", "100000000", "--run-dir", str(tmp_path / "cmp"), "--out", str(tmp_path / "c.gif")],
             tmp_path, "--epochs=100000000 for 4 runs records 400,000,004 steps of 303 parameters",
             "this machine has 24.0 GiB available")  # fmt: skip


def test_python_api_names_its_keywords(tmp_path, machine_of_24_gib):
    from losstrail import compare, loss_landscape_anim
    from losstrail.builtin.models import MLP

    with pytest.raises(
        ValueError,
        match=r"input_dim=2, num_classes=3, num_hidden_layers=100000, hidden_dim=1000 make a model of "
        r"100,099,005,003 parameters, which needs about .* TiB of memory \(parameters .* TiB\); "
        r"this machine has 24.0 GiB",
    ):
        MLP(input_dim=2, num_classes=3, num_hidden_layers=100000, hidden_dim=1000)
    with pytest.raises(
        ValueError,
        match=r"n_epochs=1000000000 make a model of 303 parameters for 1,000,000,001 "
        r"recorded steps, which needs about",
    ):
        loss_landscape_anim(n_epochs=10**9, model_dirpath=tmp_path / "ck", output_filename=tmp_path / "x.gif")
    with pytest.raises(ValueError, match=r"epochs=100000000 for 2 runs records 200,000,002 steps"):
        compare(optimizers=["adam", "sgd"], epochs=10**8, run_dir=tmp_path / "cmp", out=tmp_path / "c.gif")
    with pytest.raises(ValueError, match=r"resolution=\(100000, 100000\) is a grid of"):
        loss_landscape_anim(resolution=(100000, 100000), model_dirpath=tmp_path / "ck")
    assert _left(tmp_path) == []


def test_the_cli_refuses_before_importing_torch(tmp_path):
    """The whole check runs before torch is imported: nothing was built, nothing trained."""
    script = (
        "import sys\n"
        "from losstrail.cli import app\n"
        "try:\n"
        f"    app(['run', '--hidden-dim', '10' * 6, '--run-dir', {str(tmp_path / 'ck')!r}], standalone_mode=False)\n"
        "except BaseException as err:\n"
        "    print(type(err).__name__)\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "--hidden-dim=101010101010" in result.stderr and "which needs about" in result.stderr, result.stderr
    assert "torch imported: False" in result.stdout, result.stdout
    assert _left(tmp_path) == []


def test_the_dataset_sizes_are_the_datamodules():
    from losstrail._registry import DATASET_SIZES
    from losstrail.builtin import data

    assert set(DATASET_SIZES) == set(data.DATAMODULES)
    for name, (shape, classes, examples) in DATASET_SIZES.items():
        kind = data.DATAMODULES[name]
        assert (kind.input_dim if isinstance(kind.input_dim, tuple) else (kind.input_dim,)) == shape
        assert kind.num_classes == classes
        if name == "mnist":  # its images are files: the default count, without reading them
            assert inspect.signature(kind).parameters["n_examples"].default == examples
            continue
        if name == "digits":
            pytest.importorskip("sklearn")
        assert len(kind(batch_size=None).dataset) == examples
