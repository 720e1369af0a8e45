import re
import subprocess
import sys

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from losstrail.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "run" in result.output and "render" in result.output


def test_run_help_lists_every_option():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for option in (
        "--dataset",
        "--model",
        "--optimizer",
        "--lr",
        "--epochs",
        "--batch-size",
        "--directions",
        "--resolution",
        "--fps",
        "--frames",
        "--seed",
        "--out",
        "--run-dir",
        "--quiet",
        "--centre",
        "--xrange",
        "--yrange",
        "--subset",
        "--bn-batches",
        "--keep-biases",
        "--negative-curvature",
        "--hessian-examples",
        "--no-faithfulness",
    ):
        assert option in result.output


def test_run_then_render(tmp_path):
    out, run_dir = tmp_path / "x.gif", tmp_path / "ck"
    result = runner.invoke(
        app,
        [
            "run",
            "--epochs",
            "6",
            "--resolution",
            "10",
            "--frames",
            "4",
            "--seed",
            "1",
            "--optimizer",
            "sgd",
            "--lr",
            "0.1",
            "--batch-size",
            "555",
            "--out",
            str(out),
            "--run-dir",
            str(run_dir),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    with Image.open(out) as im:
        assert im.n_frames == 4
    again = tmp_path / "y.gif"
    result = runner.invoke(app, ["render", str(run_dir), "--out", str(again), "--frames", "3", "-q"])
    assert result.exit_code == 0, result.output
    with Image.open(again) as im:
        assert im.n_frames == 3


def test_bad_arguments_exit_2_with_the_flag_in_the_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --run-dir and --out land here, if anywhere
    cases = [
        (["run", "--optimizer", "adamm"], "--optimizer='adamm' is not known"),
        (["run", "--directions", "pcaa"], "--directions='pcaa' is not known; expected one of 'pca'"),
        (["run", "--dataset", "mnistt"], "--dataset='mnistt' is not known; expected one of 'spirals'"),
        (["run", "--epochs", "0"], "--epochs=0 must be a positive integer"),
        (["run", "--fps", "0"], "--fps=0.0 must be a positive number of frames per second, e.g. --fps=15"),
        (["run", "--frames", "1"], "--frames=1 must be an integer of at least 2, e.g. --frames=300"),
        (["run", "--lr", "-1"], "--lr=-1 must be a positive learning rate, e.g. --lr 0.005"),
        (["run", "--batch-size", "0"], "--batch-size=0 must be a positive integer"),
        (["render", str(tmp_path / "nowhere")], "is not a directory"),
        (["run", "--resolution", "10y"], "--resolution='10y' must be a count such as 100, or NXxNY"),
        (["run", "--xrange", "1"], "--xrange='1' must be LOW,HIGH"),
        (["run", "--subset", "5000"], "--subset=5000 is larger than the data (1110 examples)"),
        (["run", "--directions", "custom"], "pass --custom-directions FILE.npz holding arrays u and v of shape (303,)"),
        (["run", "--custom-directions", "no.npz"], "--custom-directions='no.npz' is not a file"),
        (["compare", "--lrs", "0.1,-1"], "--lrs=0.1,-1 must be positive learning rates"),
        (["compare", "--epochs", "0"], "--epochs=0 must be a positive integer"),
        (["compare", "--fps", "0"], "--fps=0.0 must be a positive number"),
    ]
    api_names = ("reduction_method", "n_epochs", "giffps", "n_frames", "learning_rate", "custom_directions=")
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert not any(name in result.output for name in api_names), (args, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed command left files or folders behind"


def test_a_warning_is_one_plain_line(tmp_path):
    args = ["run", "--directions", "random", "--epochs", "3", "--resolution", "5", "--frames", "2", "-q"]
    result = runner.invoke(app, args + ["--out", str(tmp_path / "w.gif"), "--run-dir", str(tmp_path / "ck")])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "captures only" in line]
    assert len(warning) == 1 and warning[0].startswith("Warning: the 'random' plane captures only"), result.output
    assert "--directions='pca' captures the most" in warning[0]
    assert "UserWarning" not in result.output and "cli.py" not in result.output and "warnings.warn" not in result.output


def test_custom_directions_from_a_file(tmp_path):
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=303), rng.normal(size=303)  # the default MLP on spirals has P=303
    np.savez(tmp_path / "uv.npz", u=u, v=v)
    np.save(tmp_path / "uv.npy", np.stack([v, u]))
    for name, (first, second) in (("uv.npz", (u, v)), ("uv.npy", (v, u))):
        args = ["run", "--directions", "custom", "--custom-directions", str(tmp_path / name), "--epochs", "2"]
        args += ["--resolution", "5", "--frames", "2", "-q", "--no-faithfulness"]
        result = runner.invoke(
            app, args + ["--out", str(tmp_path / "c.gif"), "--run-dir", str(tmp_path / f"ck-{name}")]
        )
        assert result.exit_code == 0, result.output
        with np.load(tmp_path / f"ck-{name}" / "plane.npz") as plane:
            for given, saved in ((first, plane["u"]), (second, plane["v"])):
                cosine = given @ saved / np.linalg.norm(given) / np.linalg.norm(saved)
                assert cosine > 1 - 1e-6
    np.save(tmp_path / "bad.npy", np.zeros((3, 303)))
    result = runner.invoke(app, ["run", "--custom-directions", str(tmp_path / "bad.npy"), "--directions", "custom"])
    assert result.exit_code == 2 and "holds an array of shape (3, 303)" in result.output


def test_run_help_fits_80_columns():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "…" not in result.output, "an option name or help text is cut off"
    text = " ".join(result.output.replace("│", " ").split())
    assert re.search(r"\w \.(\s|$)", text) is None, "a stray space before a full stop"
    assert "[default: (5e-3 for the MLP)]" in text and "[default: (the whole dataset)]" in text


def test_the_default_run_is_seeded(tmp_path):
    """Two runs with every default seed-related setting left alone give the same bytes."""
    args = ["run", "--epochs", "5", "--resolution", "8", "--frames", "4", "-q"]
    written = []
    for k in range(2):
        out = tmp_path / f"{k}.gif"
        assert runner.invoke(app, args + ["--out", str(out), "--run-dir", str(tmp_path / f"ck{k}")]).exit_code == 0
        written.append(out.read_bytes())
    assert written[0] == written[1]


def test_the_cli_module_does_not_import_torch():
    code = "import sys, losstrail.cli; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == [
        "False",
        "False",
    ]


def test_run_with_filter_directions_and_grid_options(tmp_path):
    out, run_dir = tmp_path / "f.gif", tmp_path / "ck"
    args = ["run", "--epochs", "5", "--frames", "3", "--seed", "2", "--directions", "filter", "--resolution", "6x4"]
    args += ["--xrange=-2,1", "--subset", "200", "--out", str(out), "--run-dir", str(run_dir), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with np.load(run_dir / "surface.npz") as s:
        assert s["loss"].shape == (4, 6) and (s["xs"][0], s["xs"][-1]) == (-2.0, 1.0)
    with np.load(run_dir / "plane.npz") as plane:
        assert str(plane["method"]) == "filter"


def test_render_a_saved_run_to_every_format(tmp_path):
    run_dir = tmp_path / "ck"
    result = runner.invoke(
        app,
        ["run", "--epochs", "4", "--resolution", "8", "--frames", "3", "--seed", "0", "--decision"]
        + ["--out", str(tmp_path / "r.gif"), "--run-dir", str(run_dir), "-q"],
    )
    assert result.exit_code == 0, result.output
    assert (run_dir / "decision.npz").is_file()
    for name, extra in [
        ("v.mp4", ["--frames", "3"]),
        ("p.html", ["--frames", "3"]),
        ("s.png", ["--step", "2"]),  # a still has one frame: --frames is not its option
        ("t.svg", ["--cmap", "viridis", "--linear", "--size", "700x500"]),
        ("u.gif", ["--view", "3d", "--every", "2", "--frames", "3"]),
    ]:
        out = tmp_path / name
        result = runner.invoke(app, ["render", str(run_dir), "--out", str(out), "-q", *extra])
        assert result.exit_code == 0, (name, result.output)
        assert out.stat().st_size > 1000
    with Image.open(tmp_path / "u.gif") as im:
        assert im.size == (900, 700) and im.n_frames == 3


def test_render_names_what_is_missing_or_incompatible(tmp_path):
    run_dir = tmp_path / "ck"
    args = ["run", "--epochs", "3", "--resolution", "6", "--frames", "2", "--out", str(tmp_path / "a.gif")]
    assert runner.invoke(app, [*args, "--run-dir", str(run_dir), "-q"]).exit_code == 0
    (run_dir / "surface.npz").unlink()
    result = runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "b.gif")])
    assert result.exit_code == 2 and "has no surface.npz; it holds" in result.output
    record = (run_dir / "run.json").read_text().replace('"format_version": 2', '"format_version": 99')
    (run_dir / "run.json").write_text(record)
    result = runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "b.gif")])
    assert result.exit_code == 2 and "format_version=99; this losstrail reads 1" in result.output
    result = runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "b.avi")])
    assert result.exit_code == 2 and "expected one of 'gif', 'mp4', 'html', 'png', 'pdf', 'svg'" in result.output
