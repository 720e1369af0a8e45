"""Every argument checked where it enters, before any training (issue 14, cases 6-10), and the environment's errors."""

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import losstrail
from losstrail.cli import app

runner = CliRunner()
SMALL = ["--epochs", "3", "--frames", "2", "--resolution", "6", "--hidden-dim", "8", "-q"]


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(
        "losstrail.training.fit.train_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained"))
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--resolution", "1000000"],
            r"--resolution=1000000 is a grid of 1,000,000,000,000 points, which needs .* TiB",
        ),
        (["--size", "0x0"], r"--size=\(0, 0\): each side must be between 160 and 16384 pixels"),
        (["--size", "100000x100000"], r"--size=\(100000, 100000\): each side must be between"),
        (["--dpi", "0"], r"--dpi=0 must be between 20 and 1200 dots per inch"),
        (["--view", "4d"], r"--view='4d' is not known; expected one of '2d', '3d'"),
        (["--cmap", "nosuchmap"], r"--cmap='nosuchmap' is not a matplotlib colormap"),
        (["--fps", "0.001"], r"--fps=0.001 must be a positive number of frames per second"),
        (["--centre", "middle"], r"--centre='middle' is not known; expected 'final', 'initial' or a recorded step"),
        (["--lr", "0"], r"--lr=0 must be a positive learning rate"),
    ],
)
def test_cli_run_refuses_bad_arguments_before_training(tmp_path, no_training, extra, message):
    run_dir = tmp_path / "R"
    result = runner.invoke(app, ["run", *SMALL, *extra, "--run-dir", str(run_dir), "--out", str(tmp_path / "a.gif")])
    assert result.exit_code == 2
    assert __import__("re").search(message, result.output), result.output
    assert not run_dir.exists() and not (tmp_path / "a.gif").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": "900x600"}, r"size='900x600' must be \(width, height\) in pixels, e.g. size=\(900, 600\)"),
        ({"resolution": (20, 20, 20)}, r"resolution=\(20, 20, 20\) must be a number of grid points per axis"),
        ({"resolution": "20"}, r"resolution='20' must be a number of grid points per axis"),
        ({"resolution": 20.0}, r"resolution=20.0 must be a number of grid points per axis"),
        ({"centre": "middle"}, r"centre='middle' is not known"),
        ({"dpi": 0}, r"dpi=0 must be between 20 and 1200"),
        ({"path_color": "notacolour"}, r"path_color='notacolour' is not a colour"),
        ({"model_filename": "../model.pt"}, r"model_filename='../model.pt' must be a plain file name"),
        (
            {"reduction_method": "custom", "custom_directions": (np.full(203, 1e300), np.arange(203.0))},
            r"custom_directions u has length inf, which float arithmetic cannot use",
        ),
    ],
)
def test_api_refuses_bad_arguments_before_training(tmp_path, no_training, kwargs, message):
    with pytest.raises(ValueError, match=message):
        losstrail.loss_landscape_anim(n_epochs=3, model_dirpath=tmp_path / "R", output_filename=tmp_path / "a.gif",
                                      quiet=True, **kwargs)  # fmt: skip
    assert not (tmp_path / "R").exists()


def test_a_model_without_parameters_is_named(tmp_path):
    class Empty(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"model=Empty has no parameters, so there is no path to record"):
        losstrail.loss_landscape_anim(n_epochs=2, model=Empty(), model_dirpath=tmp_path / "R", quiet=True,
                                      output_filename=tmp_path / "a.gif")  # fmt: skip
    assert not (tmp_path / "R").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    result = runner.invoke(app, ["run", *SMALL, "--run-dir", str(tmp / "R"), "--out", str(tmp / "a.gif")])
    assert result.exit_code == 0, result.output
    return tmp / "R"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fps", "0.001"], r"--fps=0.001 must be a positive number of frames per second"),
        (["--size", "0x0"], r"--size=\(0, 0\): each side must be between"),
        (["--view", "4d"], r"--view='4d' is not known"),
    ],
)
def test_render_refuses_bad_style_before_drawing(finished, tmp_path, extra, message):
    result = runner.invoke(app, ["render", str(finished), "--out", str(tmp_path / "r.gif"), *extra])
    assert result.exit_code == 2 and __import__("re").search(message, result.output), result.output
    assert not (tmp_path / "r.gif").exists()


def test_an_output_that_is_a_folder_is_refused_before_rendering(finished, tmp_path):
    (tmp_path / "x.gif").mkdir()
    result = runner.invoke(app, ["render", str(finished), "--out", str(tmp_path / "x.gif")])
    assert result.exit_code == 2 and "--out=" in result.output and "is a folder; name a file in it" in result.output
    assert leftovers(tmp_path) == []


def test_surface_on_a_missing_device_is_a_message(finished):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = runner.invoke(app, ["surface", str(finished), "--force", "--device", "cuda"])
    assert result.exit_code == 2 and "--device='cuda' but no CUDA device is visible" in result.output
    assert not (finished / "surface.parts").exists()


def test_a_diverging_run_still_gives_a_picture_and_says_how(tmp_path):
    out = tmp_path / "d.gif"
    result = runner.invoke(app, ["run", *SMALL, "--lr", "1e30", "--run-dir", str(tmp_path / "R"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "training diverged" in result.output and "uses --directions='random' (seeded) instead" in result.output
    assert out.stat().st_size > 1000


def test_an_mp4_without_its_index_is_an_error_not_a_success(tmp_path):
    from losstrail.renderers.mp4 import write_mp4

    frames = [np.full((60, 80, 4), 40 * k, np.uint8) for k in range(4)]
    write_mp4(iter(frames), tmp_path / "ok.mp4", fps=4, size=(80, 60))
    data = (tmp_path / "ok.mp4").read_bytes()
    moov = data.index(b"moov") - 4
    size = int.from_bytes(data[moov : moov + 4], "big")
    (tmp_path / "cut.mp4").write_bytes(data[:moov] + data[moov + size :])  # what a full disk leaves
    from losstrail.renderers.mp4 import _check_finished

    _check_finished(tmp_path / "ok.mp4")
    with pytest.raises(OSError, match=r"ffmpeg did not finish the MP4 \(no index in it\): the disk may be full"):
        _check_finished(tmp_path / "cut.mp4")


def leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.rglob("*") if ".part" in p.name.replace("surface.parts", "") or ".incoming-" in p.name
    )


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m", options: str = ""):
    """A tmpfs of ``size`` mounted on ``folder``, or a skip saying why not."""
    folder.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"this machine refuses to mount a tmpfs: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system but for about ``leave`` bytes."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("name", ["s.mp4", "s.gif", "s.html"])
def test_outputs_on_a_full_disk_are_a_message_with_nothing_left(finished, tmp_path, name):
    with small_disk(tmp_path / "disk") as disk:
        fill(disk, 8192)
        result = runner.invoke(app, ["render", str(finished), "--out", str(disk / name), "-q"])
        assert result.exit_code == 2, result.output
        assert "wrote" not in result.output
        assert f"cannot write '{disk / name}'" in result.output and "free some space" in result.output
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no half file, no temporary file


def test_a_run_and_a_surface_on_a_full_disk_are_a_message_and_leave_no_half_run(finished, tmp_path):
    with small_disk(tmp_path / "disk", size="4m") as disk:
        run_dir = disk / "R"
        for name in ("model.pt", "trajectory.npz", "plane.npz", "surface.npz", "path.npz", "run.json"):
            (run_dir / name).parent.mkdir(exist_ok=True)
            shutil.copy(finished / name, run_dir / name)
        old = (run_dir / "surface.npz").read_bytes()
        fill(disk, 4096)
        result = runner.invoke(app, ["surface", str(run_dir), "--force", "--chunk-points", "5"])
        assert (
            result.exit_code == 2 and "No space left on device" in result.output and "free some space" in result.output
        )
        assert (run_dir / "surface.npz").read_bytes() == old and leftovers(run_dir) == []
        result = runner.invoke(app, ["run", *SMALL, "--run-dir", str(disk / "new"), "--out", str(tmp_path / "n.gif")])
        assert result.exit_code == 2 and "No space left on device" in result.output
        assert not (disk / "new").exists() or not any((disk / "new").iterdir())


def test_a_read_only_folder_is_a_message(finished, tmp_path):
    with small_disk(tmp_path / "ro", options=",ro") as ro:
        result = runner.invoke(app, ["render", str(finished), "--out", str(ro / "x.gif")])
        assert result.exit_code == 2 and "--out=" in result.output and "cannot be written" in result.output
