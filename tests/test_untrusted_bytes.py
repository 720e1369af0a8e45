"""Same command, same bytes, in every format: stills carry no date and no random ids.

Issue 20, class 8. Matplotlib writes the time into a PDF (``CreationDate``) and an SVG
(``<dc:date>``), and salts the ids of an SVG's clip paths and glyphs with a random value;
losstrail writes them without dates and with a fixed salt.
"""

import re
import time

import pytest
from typer.testing import CliRunner

from losstrail.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("made")
    args = ["run", "--epochs", "3", "--resolution", "6", "--frames", "2", "--grid", "full", "-q", "--seed", "1"]
    result = runner.invoke(app, args + ["--out", str(root / "a.gif"), "--run-dir", str(root / "ck")])
    assert result.exit_code == 0, result.output
    return root / "ck"


@pytest.mark.parametrize("kind", ["svg", "pdf", "png"])
def test_rendering_a_run_twice_gives_the_same_bytes(finished_run, tmp_path, kind):
    from losstrail import render

    first = render(finished_run, tmp_path / f"first.{kind}").path.read_bytes()
    time.sleep(1.1)  # a date written to the second would differ by at least a second
    second = render(finished_run, tmp_path / f"second.{kind}").path.read_bytes()
    assert first == second
    text = first.decode("latin-1")
    assert "CreationDate" not in text and "<dc:date>" not in text
    if kind == "svg":  # the hashed ids are there, from the fixed salt
        assert re.search(r'id="[a-z][0-9a-f]{10}"', text)


def test_what_the_stills_leave_out_is_only_the_date(finished_run, tmp_path):
    """The producer and the drawing stay; the same figure saved by plain matplotlib differs only in the date."""
    from losstrail import render

    svg = render(finished_run, tmp_path / "s.svg").path.read_text()
    pdf = render(finished_run, tmp_path / "s.pdf").path.read_bytes()
    assert "Matplotlib" in svg and "<path" in svg
    assert b"/Producer" in pdf and pdf.startswith(b"%PDF")


def test_a_loss_line_still_is_the_same_each_time(tmp_path):
    import numpy as np

    from losstrail.renderers import plot_loss_line
    from losstrail.values.surface import LossLine

    ts = np.linspace(-0.5, 1.5, 9)
    line = LossLine(ts, 1 + ts**2, np.linspace(0.2, 0.9, 9))
    for kind in ("svg", "pdf"):
        a = plot_loss_line(line, tmp_path / f"a.{kind}").read_bytes()
        time.sleep(1.1)
        b = plot_loss_line(line, tmp_path / f"b.{kind}").read_bytes()
        assert a == b, kind


def test_the_cli_twice_with_one_seed_writes_one_file(tmp_path):
    args = ["run", "--epochs", "2", "--resolution", "5", "--grid", "full", "-q", "--seed", "3", "--step", "2"]
    outputs = []
    for name in ("one", "two"):
        out = tmp_path / f"{name}.svg"
        result = runner.invoke(app, args + ["--out", str(out), "--run-dir", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
