import importlib
import re
from pathlib import Path

import pytest

import losstrail
from losstrail import _registry
from losstrail.builtin.data import DATAMODULES
from losstrail.builtin.models import MODEL_BUILDERS
from losstrail.planes.directions import DIRECTION_BUILDERS
from losstrail.renderers.formats import PICTURES
from losstrail.store.formats import EXPORTS
from losstrail.training.fit import OPTIMIZER_BUILDERS
from losstrail.values.specs import Style


@pytest.mark.parametrize(
    "names, implementations",
    [
        (_registry.OPTIMIZERS, OPTIMIZER_BUILDERS),
        (_registry.DIRECTIONS, DIRECTION_BUILDERS),
        (_registry.DATASETS, DATAMODULES),
        (_registry.MODELS, MODEL_BUILDERS),
    ],
)
def test_every_name_has_one_implementation(names, implementations):
    assert tuple(implementations) == names


def test_check_choice_names_argument_value_and_choices():
    with pytest.raises(ValueError, match=r"reduction_method='pcaa' is not known; expected one of 'pca', 'random'"):
        _registry.check_choice("reduction_method", "pcaa", _registry.DIRECTIONS)


def test_every_public_name_resolves_to_what_it_says():
    """A submodule must never shadow a public function of the same name (losstrail.render, .project)."""
    import importlib
    import pkgutil

    import losstrail

    for module in pkgutil.walk_packages(losstrail.__path__, "losstrail."):
        if module.name != "losstrail.__main__":  # that one runs the command
            importlib.import_module(module.name)
    for name in losstrail.__all__:
        value = getattr(losstrail, name)
        assert not isinstance(value, type(losstrail)), name


# ---------------------------------------------------------------------------------------------- formats

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_table(header: str) -> list[list[str]]:
    """The cells of each row of the README's table whose header line starts with ``header``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:  # after the header and its --- line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _suffixes(cell: str) -> list[str]:
    return re.findall(r"`\.(\w+)`", cell)


def test_every_picture_format_has_one_writer_in_its_medium():
    assert tuple(PICTURES) == _registry.FORMATS
    for medium, names in _registry.MEDIA.items():
        assert tuple(name for name, picture in PICTURES.items() if picture.medium == medium) == names
        assert all(_registry.medium(name) == medium for name in names)
    for picture in PICTURES.values():
        for reference in (picture.writer, picture.requires):
            if reference is not None:
                module, _, function = reference.partition(":")
                assert callable(getattr(importlib.import_module(module), function)), reference
        assert picture.shown in ("img", "video", "iframe", "path")


def test_every_export_format_has_its_writers_and_reader():
    assert tuple(EXPORTS) == _registry.EXPORT_FORMATS
    assert all(name == export.name for name, export in EXPORTS.items())
    assert tuple(name for name, export in EXPORTS.items() if export.path is not None) == _registry.PATH_FORMATS
    assert tuple(name for name, export in EXPORTS.items() if export.heights) == _registry.HEIGHT_FORMATS
    # READ_FORMATS are in the order the messages list them; the same formats as those with a reader
    assert sorted(name for name, export in EXPORTS.items() if export.read is not None) == sorted(_registry.READ_FORMATS)


@pytest.mark.parametrize("picture", ["run", "comparison"])
@pytest.mark.parametrize("view", _registry.VIEWS)
@pytest.mark.parametrize("kind", _registry.FORMATS)
def test_style_knows_what_every_picture_in_every_format_and_view_draws(picture, view, kind):
    try:
        Style(view=view, title="t").check_for(picture, kind)
    except ValueError as err:  # a comparison in 3-D is a page only; the error names the field, not a KeyError
        assert picture == "comparison" and view == "3d" and _registry.medium(kind) != "page", err


def test_the_readme_lists_exactly_the_picture_formats_with_what_each_is():
    listed = {name: cells[1] for cells in _readme_table("| format | is |") for name in _suffixes(cells[0])}
    assert tuple(listed) == _registry.FORMATS
    assert listed == {name: picture.medium for name, picture in PICTURES.items()}


def test_the_readme_lists_exactly_the_export_formats_with_what_each_holds():
    def yes(flag) -> str:
        return "yes" if flag else ""

    expected = []
    for name, export in EXPORTS.items():
        also = f" (also {', '.join(f'`.{alias}`' for alias in export.aliases)})" if export.aliases else ""
        read = f"yes{also}" if export.read is not None else ""
        expected.append([f"`.{name}`", yes(export.path), yes(export.heights), yes(export.holds_path), read])
    assert _readme_table("| format | the path alone") == expected
    held = [name for cells in _readme_table("| file | holds |") for name in _suffixes(cells[0])
            if cells[0].startswith("`.")]  # fmt: skip
    assert tuple(held) == _registry.EXPORT_FORMATS


def test_the_format_choices_and_messages_come_from_the_registries(tmp_path):
    from typer.testing import CliRunner

    from losstrail._checks import output_format
    from losstrail.cli import app

    runner = CliRunner()
    wide = {"COLUMNS": "250"}  # not TERMINAL_WIDTH: typer reads it once, at import
    assert ", ".join(_registry.FORMATS) in runner.invoke(app, ["render", "--help"], env=wide).output
    export_help = runner.invoke(app, ["export", "--help"], env=wide).output
    for names in (_registry.EXPORT_FORMATS, _registry.PATH_FORMATS):
        assert ", ".join(names) in export_help
    assert "/".join(_registry.HEIGHT_FORMATS) in export_help
    assert ", ".join(_registry.READ_FORMATS) in runner.invoke(app, ["import", "--help"], env=wide).output
    pictures = _registry.quoted(_registry.FORMATS)
    with pytest.raises(ValueError, match=re.escape(f"'avi', which is not supported; expected one of {pictures}")):
        output_format("a.avi")
    with pytest.raises(ValueError, match=re.escape(f"format='webm' is not known; expected one of {pictures}")):
        Style(format="webm")
    written = _registry.quoted(f".{name}" for name in _registry.EXPORT_FORMATS)
    with pytest.raises(ValueError, match=re.escape(f"expected one of {written}")):
        losstrail.export(tmp_path, tmp_path / "s.stl")
    read = _registry.quoted(f".{s}" for name in _registry.READ_FORMATS for s in (name, *EXPORTS[name].aliases))
    with pytest.raises(ValueError, match=re.escape(f"expected one of {read}")):
        losstrail.read_surface(tmp_path / "s.txt")
