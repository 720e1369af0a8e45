"""The package's layers: imports only go down (no cycle, counting imports inside functions), no module
takes another's private names, and drawing a saved run imports neither torch nor Lightning."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import losstrail

SOURCE = Path(losstrail.__file__).resolve().parents[1]  # the folder that holds the package


def package_modules(root: Path, package: str = "losstrail") -> dict[str, Path]:
    """``{'losstrail.renderers.html': path, ...}`` for every module of ``package`` under ``root``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def lazy_exports(init: Path) -> dict[str, str]:
    """The package's ``_EXPORTS`` (name -> module), which ``__getattr__`` imports on first use."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def imports(modules: dict[str, Path], package: str = "losstrail"):
    """``(importer, imported module, name taken or None, line)`` for every import of a module of ``package``,
    at any depth of the file (inside functions too: a lazy import is still a dependency). A name taken from
    the package itself counts as an import of the module that ``_EXPORTS`` loads it from."""
    exports = lazy_exports(modules[package])
    for importer, path in modules.items():
        here = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package ``level - 1`` folders up
                    parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                found = [
                    (f"{base}.{a.name}", None) if f"{base}.{a.name}" in modules else (base, a.name) for a in node.names
                ]
            else:
                continue
            for module, name in found:
                if module.split(".")[0] != package:
                    continue
                if module == package and name in exports:
                    module = f"{package}.{exports[name]}"
                while module not in modules:  # `import losstrail.x.y` of a name, not a module
                    module = module.rpartition(".")[0]
                if module != importer:
                    yield importer, module, name, node.lineno


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) through each group of modules that import each other."""
    found, done = [], set()
    for start in sorted(edges):
        stack, on_path = [(start, iter(sorted(edges.get(start, ()))))], [start]
        while stack:
            node, rest = stack[-1]
            nxt = next(rest, None)
            if nxt is None:
                stack.pop()
                on_path.pop()
                done.add(node)
            elif nxt in on_path:
                cycle = on_path[on_path.index(nxt) :] + [nxt]
                if not any(set(cycle) == set(c) for c in found):
                    found.append(cycle)
            elif nxt not in done:
                stack.append((nxt, iter(sorted(edges.get(nxt, ())))))
                on_path.append(nxt)
    return found


def graph(root: Path, package: str = "losstrail"):
    modules = package_modules(root, package)
    edges, private = {}, []
    for importer, module, name, line in imports(modules, package):
        edges.setdefault(importer, set()).add(module)
        if name is not None and name.startswith("_") and not name.startswith("__"):
            private.append(f"{modules[importer].relative_to(root)}:{line} takes {name} from {module}")
        inner = module.split(".")[1:-1]  # a folder's private module is its own (the helpers at the top are shared)
        if inner and _private(module.split(".")[-1]) and importer.split(".")[1:2] != inner[:1]:
            private.append(f"{modules[importer].relative_to(root)}:{line} imports {module}, private to its folder")
    return edges, private


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_one_that_imports_it_back():
    edges, _ = graph(SOURCE)
    assert "losstrail.renderers" in edges["losstrail.renderers.redraw"]  # the graph sees the package's imports
    found = cycles(edges)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_no_module_takes_another_modules_private_names():
    _, private = graph(SOURCE)
    assert not private, "\n".join(private)


# The stages, bottom first (``ARCHITECTURE.md``): a module imports only from its own stage or those below it.
STAGES = ("helpers", "values", "evaluation", "planes", "training", "store", "builtin", "renderers", "faces")
# The stages that draw and store what a run made: NumPy and matplotlib, no torch at import.
TORCH_FREE = ("values", "renderers", "store")


# The folders at the top that are faces, beside the modules at the top that are not helpers.
FACE_FOLDERS = ("jobs",)


def stage(module: str) -> str:
    """The stage of a module: its folder's; ``_name`` modules at the top are the small helpers every stage
    shares, and the package's lazy table of names is one too; the other modules at the top (``api``, ``cli``,
    ``comparison``, the reference's ``model``/``datamodule``) and ``jobs/`` are the faces. A folder of no stage
    is an error: the order must say where a new one stands.

    >>> stage("losstrail.values.plane"), stage("losstrail._checks"), stage("losstrail.api"), stage("losstrail")
    ('values', 'helpers', 'faces', 'helpers')
    """
    parts = module.split(".")
    if len(parts) == 1 or (parts[1].startswith("_") and not parts[1].startswith("__")):
        return "helpers"
    if len(parts) == 2 and not (SOURCE / parts[0] / parts[1]).is_dir():
        return "faces"
    if parts[1] in STAGES:
        return parts[1]
    if parts[1] in FACE_FOLDERS:
        return "faces"
    raise ValueError(f"the folder {parts[1]!r} of {module} has no stage: add it to STAGES or FACE_FOLDERS")


def against_the_stages(root: Path, package: str = "losstrail") -> list[str]:
    """Every import that points up the stage order: ``file:line importer (stage) -> module (stage)``."""
    modules = package_modules(root, package)
    rank = {name: i for i, name in enumerate(STAGES)}
    return [
        f"{modules[importer].relative_to(root)}:{line} {importer} ({stage(importer)}) imports {module} "
        f"({stage(module)})"
        for importer, module, _, line in imports(modules, package)
        if rank[stage(module)] > rank[stage(importer)]
    ]


def test_imports_point_down_the_stages():
    assert stage("losstrail.renderers.redraw") == "renderers" and stage("losstrail.jobs.grid") == "faces"
    found = against_the_stages(SOURCE)
    assert not found, "imports against the stage order:\n" + "\n".join(found)


def test_the_stage_check_sees_an_import_up_the_order(tmp_path):
    pkg = tmp_path / "losstrail"
    for folder in ("values", "renderers"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("_EXPORTS = {}\n")
    (pkg / "values" / "plane.py").write_text("def f():\n    from losstrail.renderers import gif\n")
    (pkg / "renderers" / "gif.py").write_text("from losstrail.values import plane\n")
    assert against_the_stages(tmp_path) == [
        f"{Path('losstrail/values/plane.py')}:2 losstrail.values.plane (values) imports losstrail.renderers.gif "
        "(renderers)"
    ]


def test_every_folder_has_a_stage_and_the_picture_writers_are_renderers():
    """``stage`` fails on a folder the order does not place; the writers ``renderers.formats`` names as strings
    (imported when a picture is written, so the import graph cannot see them) are renderers' own."""
    folders = {p.parent.name for p in (SOURCE / "losstrail").glob("*/__init__.py")}
    assert {stage(f"losstrail.{folder}.x") for folder in folders} <= set(STAGES)
    with pytest.raises(ValueError, match="has no stage"):
        stage("losstrail.elsewhere.x")
    from losstrail.renderers.formats import PICTURES

    named = {ref.partition(":")[0] for p in PICTURES.values() for ref in (p.writer, p.requires) if ref is not None}
    assert named and all(stage(module) == "renderers" for module in named), named


def test_values_renderers_and_the_store_import_no_torch_at_import_time():
    """A saved run loads and draws without torch: torch only inside the functions that load weights."""
    found = []
    for path in sorted(SOURCE.glob("losstrail/*/*.py")):
        if path.parent.name not in TORCH_FREE:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(SOURCE)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "torch"]
    assert not found, found


def test_the_checks_see_lazy_imports_relative_imports_and_private_names(tmp_path):
    """The checks above on a made-up package: cycles through an import inside a function and through a name the
    package exports lazily, and a private name taken across modules."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("_EXPORTS = {'thing': 'b', 'other': 'e'}\n")
    (pkg / "a.py").write_text("from pkg.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from pkg.sub import c\n\ndef _hidden():\n    pass\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("def f():\n    from ..a import thing\n")
    (pkg / "d.py").write_text("import pkg.sub.c\nfrom .b import _hidden\n")
    (pkg / "sub" / "_inner.py").write_text("")
    (pkg / "sub" / "e.py").write_text("from pkg.sub import _inner\n")  # its own folder's: allowed
    (pkg / "f.py").write_text("from pkg.sub._inner import x\n")
    edges, private = graph(tmp_path, "pkg")
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert private == [
        f"{Path('pkg/d.py')}:2 takes _hidden from pkg.b",
        f"{Path('pkg/f.py')}:1 imports pkg.sub._inner, private to its folder",
    ]
    (pkg / "b.py").write_text("def thing():\n    pass\n")
    assert cycles(graph(tmp_path, "pkg")[0]) == []
    (pkg / "e.py").write_text("def other():\n    from pkg import thing\n")  # a name the package loads lazily
    (pkg / "b.py").write_text("def thing():\n    from pkg.e import other\n")
    assert cycles(graph(tmp_path, "pkg")[0]) == [["pkg.b", "pkg.e", "pkg.b"]]


# --- drawing a saved run: NumPy arrays and JSON, no torch, no Lightning ---------------------------------------------

HEAVY = ("torch", "lightning", "pytorch_lightning")
REPORT = f"import json, sys; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"


def fresh_python(code: str, cwd: Path) -> list[str]:
    """The heavy packages loaded by ``code`` in a new interpreter that imports this losstrail."""
    env = {**os.environ, "PYTHONPATH": str(SOURCE)}
    done = subprocess.run([sys.executable, "-c", code + "\n" + REPORT], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small run and a small comparison made by the real pipeline (train, plane, projection, grid), saved to disk."""
    folder = tmp_path_factory.mktemp("saved")
    losstrail.loss_landscape_anim(
        n_epochs=4, model_dirpath=folder / "run", output_filename=folder / "first.png", resolution=8, seed=0,
        quiet=True,
    )  # fmt: skip
    losstrail.compare(optimizers=["adam", "sgd"], epochs=3, resolution=8, out=None, run_dir=folder / "cmp", quiet=True)
    return folder


@pytest.mark.parametrize("saved_dir", ["run", "cmp"])
def test_rerendering_to_png_gif_and_html_imports_neither_torch_nor_lightning(saved, saved_dir, tmp_path):
    source, out = str(saved / saved_dir), str(tmp_path / "again.")
    code = "import losstrail\nfor kind in ('png', 'gif', 'html'):\n"
    frames = "{} if kind == 'png' else {'max_frames': 4}"  # a still has one frame: max_frames is not its option
    code += f"    losstrail.render({source!r}, {out!r} + kind, quiet=True, **({frames}))\n"
    assert fresh_python(code, tmp_path) == []
    assert all((tmp_path / f"again.{kind}").stat().st_size > 1000 for kind in ("png", "gif", "html"))


def test_the_render_command_imports_neither_torch_nor_lightning(saved, tmp_path):
    """As the ``losstrail`` console script runs it (``losstrail.cli:main``)."""
    argv = ["losstrail", "render", str(saved / "run"), "--out", str(tmp_path / "x.png"), "-q"]
    code = (
        f"import sys\nfrom losstrail.cli import main\nsys.argv = {argv!r}\ntry:\n    main()\nexcept SystemExit as e:\n"
    )
    code += "    assert not e.code, e.code\n"
    assert fresh_python(code, tmp_path) == []
    assert (tmp_path / "x.png").stat().st_size > 1000


def test_the_report_sees_torch_when_it_is_loaded(tmp_path):
    """The check above can fail: it sees torch when something (here the Recorder) loads it."""
    assert "torch" in fresh_python("import losstrail\nlosstrail.Recorder", tmp_path)
