"""What a job is asked to do, as frozen values: the training, the plane, the grid and the picture's look.

Each value checks itself where it is made (``of`` names each argument as the caller spelled
it, e.g. ``giffps`` for ``loss_landscape_anim``'s frame rate, ``fps`` for ``animate``'s) and
has a ``key()``: the settings ``run.json`` stores under the names it has always used, so "reuse
what is saved" compares a spec with the saved one, and runs written before these values
existed read the same way. Torch-free: the renderers and the CLI use ``Style``.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from losstrail._checks import (
    MAX_DPI,
    MAX_LEVELS,
    MIN_DPI,
    check_centre,
    check_fps,
    check_learning_rate,
    check_range,
    check_resolution,
    check_size,
)
from losstrail._registry import FORMATS, GRIDS, PATH_DIRECTIONS, VIEWS, check_choice, medium, quoted, stated_optimizer

__all__ = ["GridSpec", "PlaneSpec", "Style", "TrainSpec"]

LAYOUTS = ("overlay", "grid")
# True while ``_Spec.of`` or ``_Spec.replace`` makes a value whose fields it has checked already.
_CHECKED = contextvars.ContextVar("losstrail_spec_checked", default=False)
TIMELINES = ("auto", "step", "fraction")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Spec:
    """A frozen value whose fields are checked by ``_check(values, names)``, naming each as the caller did.

    Each setting is checked once: ``of`` and ``replace`` check what they are given and make the value
    without checking it again; a value made directly (``Style(cmap=...)``) checks its fields as it is made.
    ``_check`` returns the values in their normal form (a size as a tuple, an optimizer by its name here).
    """

    def __post_init__(self):
        if _CHECKED.get():  # made by ``of`` or ``replace``: the values were checked there, by the caller's names
            return
        for field, value in self._check(self._values(), {}).items():
            object.__setattr__(self, field, value)

    @classmethod
    def of(cls, values: Mapping, names: Mapping[str, str] | None = None, *, where: str | None = None):
        """The value made of ``values``, checked with each field named as ``names`` says (default its own name).

        ``where`` (the caller's function) turns a name that is no field into a TypeError listing the fields.
        """
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            shown = [(names or {}).get(f, f) for f in fields]
            raise TypeError(
                f"{where or cls.__name__}() got unexpected keyword argument(s) {quoted(unknown)}; "
                f"expected {', '.join(shown)}"
            )
        return cls._made(cls._check(dict(values), dict(names or {})))

    @classmethod
    def _made(cls, values: Mapping):
        """The value of ``values``, checked already: made without checking them again."""
        token = _CHECKED.set(True)
        try:
            return cls(**values)
        finally:
            _CHECKED.reset(token)

    @staticmethod
    def _check(values: dict, names: dict) -> dict:
        raise NotImplementedError

    def _values(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        """A copy with ``changes``, each checked (the fields it keeps were checked when this value was made)."""
        return self._made({**self._values(), **self._check(dict(changes), {})})


# ------------------------------------------------------------------------------------------ the look


@dataclass(frozen=True)
class Style(_Spec):
    """How a picture looks and what format it has: one value for ``loss_landscape_anim``, ``animate``,
    ``render``, ``compare``, ``render_surface`` and every command of the CLI.

    Every renderer draws with each field it can show and rejects, by name, one set away from
    its default that it cannot (``Style.check_for``), so nothing is silently ignored.

    Fields (defaults in brackets):
        format: the output format [the output file's extension]: gif, mp4, html, png, pdf, svg.
        view: ``'2d'`` contour or ``'3d'`` shaded surface ['2d'].
        rotate: 3-D animation: turn the camera half a turn over the animation [False].
        cmap: matplotlib colormap of the landscape ['YlGnBu'].
        levels: contour levels of the 2-D view [35].
        log_scale: colour by ln(loss) (True) or by the loss [True].
        size: ``(width, height)`` in pixels [900x600, or wider with a loss panel].
        dpi: dots per inch of a GIF, MP4 or still [100].
        path_color: colour of a single run's path ['red'].
        every: draw only every k-th recorded step (and the last) [all].
        step: for a still, the step it shows [the last].
        title: the heading [the run's own].
        fps: frames per second [15]. max_frames: most frames [300].
        layout: a comparison's runs ``'overlay'`` on one contour or in a ``'grid'`` of panels ['overlay'].
        timeline: how a comparison's runs move together: ``'auto'``, ``'step'``, ``'fraction'`` ['auto'].

    >>> Style(cmap="magma").changed()
    {'cmap': 'magma'}
    >>> Style.of({"fps": 0}, {"fps": "giffps"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: giffps=0 must be a positive number of frames per second, e.g. giffps=15 (from 0.01 to 1000)
    """

    format: str | None = None
    view: str = "2d"
    rotate: bool = False
    cmap: str = "YlGnBu"
    levels: int = 35
    log_scale: bool = True
    size: tuple[int, int] | None = None
    dpi: int = 100
    path_color: str = "red"
    every: int | None = None
    step: int | None = None
    title: str | None = None
    fps: float = 15
    max_frames: int = 300
    layout: str = "overlay"
    timeline: str = "auto"

    @staticmethod
    def _check(values: dict, names: dict) -> dict:
        _check_look(values, lambda field: names.get(field, field))
        if isinstance(values.get("size"), list):
            values["size"] = tuple(values["size"])
        return values

    def updated(self, options: Mapping, names: Mapping[str, str] | None = None, *, where: str | None = None):
        """This style with ``options`` (field values) in place of its own: only ``options`` are checked, named
        as ``names`` says (this style's own fields were checked when it was made)."""
        if not options:
            return self
        checked = Style.of(options, names, where=where)  # the unknown names refused, the options checked
        return self._made({**self._values(), **{k: getattr(checked, k) for k in options}})

    def changed(self) -> dict:
        """The fields set away from their defaults."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}

    def check_for(self, picture: str, kind: str, names: Mapping[str, str] | None = None) -> None:
        """Raise ValueError naming the first field set away from its default that ``picture`` in ``kind`` cannot draw.

        ``picture`` is ``'run'`` or ``'comparison'``; ``kind`` a format (gif, mp4, html, png, ...).
        """
        drawn_as = medium(kind)
        uses = _USES[(picture, "3d" if self.view == "3d" else "2d", drawn_as)]
        for field, value in self.changed().items():
            if field not in uses:
                name = (names or {}).get(field, field)
                what = f"a {'comparison' if picture == 'comparison' else 'single run'}'s {_MEDIUM_WORDS[drawn_as]}"
                view = " in 3-D" if self.view == "3d" and field != "view" else ""
                raise ValueError(
                    f"{name}={value!r} does not apply to {what}{view} ({kind}); {_WHY[field]}. Leave {name} out"
                )


def _check_look(values: dict, name: Callable[[str], str]) -> None:
    """Every look option checked: format, view, colours, size, dpi, levels, every, step, flags, frames."""
    if values.get("format") is not None:
        check_choice(name("format"), values["format"], FORMATS)
    for field, choices in (("view", VIEWS), ("layout", LAYOUTS), ("timeline", TIMELINES)):
        if field in values:
            check_choice(name(field), values[field], choices)
    if "size" in values:
        check_size(values["size"], name("size"))
    if "dpi" in values:
        dpi = values["dpi"]
        if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not MIN_DPI <= dpi <= MAX_DPI:
            raise ValueError(
                f"{name('dpi')}={dpi!r} must be between {MIN_DPI} and {MAX_DPI} dots per inch, e.g. {name('dpi')}=100"
            )
    if "levels" in values and (not _is_int(values["levels"]) or not 2 <= values["levels"] <= MAX_LEVELS):
        raise ValueError(
            f"{name('levels')}={values['levels']!r} must be from 2 to {MAX_LEVELS} contour levels, "
            f"e.g. {name('levels')}=35"
        )
    for field in ("every", "step"):
        value = values.get(field)
        if value is not None and (not _is_int(value) or (field == "every" and value < 1)):
            raise ValueError(f"{name(field)}={value!r} must be a positive number of steps, e.g. {name(field)}=5")
    for field in ("rotate", "log_scale"):
        if field in values and not isinstance(values[field], bool):
            raise ValueError(f"{name(field)}={values[field]!r} must be True or False")
    if values.get("title") is not None and not isinstance(values["title"], str):
        raise ValueError(f"{name('title')}={values['title']!r} must be text")
    if "fps" in values:
        check_fps(values["fps"], name("fps"))
    frames = values.get("max_frames", 300)
    if not _is_int(frames) or frames < 2:
        raise ValueError(
            f"{name('max_frames')}={frames!r} must be an integer of at least 2, e.g. {name('max_frames')}=300"
        )
    _check_colours(values.get("cmap"), values.get("path_color"), name)


def _check_colours(cmap, colour, name: Callable[[str], str]) -> None:
    if (cmap is None or cmap == "YlGnBu") and (colour is None or colour == "red"):
        return  # the defaults, without importing matplotlib
    import matplotlib

    if cmap is not None and (not isinstance(cmap, str) or cmap not in matplotlib.colormaps):
        near = sorted(n for n in matplotlib.colormaps if str(cmap).lower()[:3] in n.lower())[:5]
        hint = f" (close: {', '.join(near)})" if near else ""
        raise ValueError(
            f"{name('cmap')}={cmap!r} is not a matplotlib colormap{hint}; e.g. {name('cmap')}='YlGnBu', 'viridis' "
            "or 'magma'"
        )
    if colour is not None and not matplotlib.colors.is_color_like(colour):
        raise ValueError(
            f"{name('path_color')}={colour!r} is not a colour; e.g. {name('path_color')}='red' or '#ff8800'"
        )


# What each picture draws with; a field outside its set and away from its default is an error.
_EVERY_PICTURE = {"format", "cmap", "log_scale", "size", "title"}
_FRAMES = {"fps", "max_frames"}
_USES = {
    ("run", "2d", "animation"): _EVERY_PICTURE | _FRAMES | {"view", "levels", "dpi", "path_color", "every"},
    ("run", "2d", "still"): _EVERY_PICTURE | {"view", "levels", "dpi", "path_color", "step"},
    ("run", "2d", "page"): _EVERY_PICTURE | _FRAMES | {"view", "levels", "path_color", "every"},
    ("run", "3d", "animation"): _EVERY_PICTURE | _FRAMES | {"view", "rotate", "dpi", "path_color", "every"},
    ("run", "3d", "still"): _EVERY_PICTURE | {"view", "dpi", "path_color", "step"},
    ("run", "3d", "page"): _EVERY_PICTURE | _FRAMES | {"view", "path_color", "every"},
    ("comparison", "2d", "animation"): _EVERY_PICTURE | _FRAMES | {"levels", "dpi", "layout", "timeline"},
    ("comparison", "2d", "still"): _EVERY_PICTURE | {"levels", "dpi", "layout"},
    ("comparison", "2d", "page"): _EVERY_PICTURE | _FRAMES | {"view", "levels", "timeline"},
    ("comparison", "3d", "animation"): set(),  # view='3d' itself is named first
    ("comparison", "3d", "still"): set(),
    ("comparison", "3d", "page"): _EVERY_PICTURE | _FRAMES | {"view", "timeline"},
}
_MEDIUM_WORDS = {"animation": "animation", "still": "still picture", "page": "HTML page"}
_WHY = {
    "format": "the format is always usable",
    "view": "a comparison is drawn in 3-D only as an HTML page (out='compare.html')",
    "rotate": "rotate turns the camera of a single run's 3-D GIF or MP4 (an HTML page turns with the mouse)",
    "cmap": "every picture has a colour map",
    "levels": "levels are the 2-D contour's; the 3-D view is a shaded surface",
    "log_scale": "every picture has a colour scale",
    "size": "every picture has a size",
    "dpi": "dots per inch set the pixels of a GIF, MP4 or still; an HTML page is sized by size=(width, height)",
    "path_color": "each run of a comparison has its own colour, shown in the legend",
    "every": "every thins the steps of a single run's animation; a comparison is thinned by max_frames",
    "step": "step picks the step a single run's still (png, pdf, svg) shows; animations show every step",
    "title": "every picture has a title",
    "fps": "a still has one frame",
    "max_frames": "a still has one frame",
    "layout": "layout arranges the runs of a comparison's GIF, MP4 or still",
    "timeline": "timeline moves the runs of a comparison's animation together",
}


# ------------------------------------------------------------------------------- training, plane, grid


@dataclass(frozen=True)
class TrainSpec(_Spec):
    """How the model is trained: epochs, optimizer, learning rate, seed, how often the path is recorded.

    ``optimizer`` is a name, or a callable ``(params, lr=...)``; ``learning_rate`` None keeps the
    model's own; ``params`` picks the parameters the path records (see ``fit``).
    """

    n_epochs: int = 300
    optimizer: str | Callable = "adam"
    learning_rate: float | None = None
    seed: int | None = None
    record_every: int = 1
    params: object = "trainable"

    @staticmethod
    def _check(values: dict, names: dict) -> dict:
        def name(field):
            return names.get(field, field)

        for field, example in (("n_epochs", 300), ("record_every", 1)):
            value = values.get(field, 1)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name(field)}={value!r} must be a positive integer, e.g. {name(field)}={example}")
        if "optimizer" in values and not callable(values["optimizer"]):  # the reference's aliases by their names here
            values["optimizer"] = stated_optimizer(values["optimizer"], name("optimizer"))
        check_learning_rate(values.get("learning_rate"), name("learning_rate"))
        _check_seed(values.get("seed"), name("seed"))
        return values

    def key(self) -> dict:
        """What ``run.json`` keeps of the training."""
        return {
            "n_epochs": self.n_epochs,
            "optimizer": self.optimizer if isinstance(self.optimizer, str) else "custom",
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "record_every": self.record_every,
            "params": _params_key(self.params),
        }


def _params_key(params):
    if isinstance(params, str):
        return params
    if isinstance(params, (list, tuple)) and all(isinstance(p, str) for p in params):
        return list(params)
    return "custom"


def _check_seed(seed, argument: str) -> None:
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"{argument}={seed!r} must be a non-negative integer or None, e.g. {argument}=0")


@dataclass(frozen=True)
class PlaneSpec(_Spec):
    """How the plane is chosen: the method and its options (see ``make_plane``); ``seed`` for random ones.

    ``custom`` says the directions are the caller's own vectors, which are not compared: a
    plane of custom directions is made again each time.
    """

    method: str = "pca"
    centre: str | int = "final"
    keep_biases: bool = False
    negative_curvature: bool = False
    hessian_examples: int | None = None
    seed: int | None = None

    @staticmethod
    def _check(values: dict, names: dict) -> dict:
        def name(field):
            return names.get(field, field)

        check_choice(name("method"), values.get("method", "pca"), PATH_DIRECTIONS)
        check_centre(values.get("centre", "final"), name("centre"))
        for field in ("keep_biases", "negative_curvature"):
            if not isinstance(values.get(field, False), bool):
                raise ValueError(f"{name(field)}={values[field]!r} must be True or False")
        examples = values.get("hessian_examples")
        if examples is not None and (not _is_int(examples) or examples < 1):
            raise ValueError(
                f"{name('hessian_examples')}={examples!r} must be a positive number of examples, "
                f"e.g. {name('hessian_examples')}=256"
            )
        _check_seed(values.get("seed"), name("seed"))
        return values

    @property
    def options(self) -> dict:
        """The method's options, as ``make_plane`` takes them."""
        return {
            "centre": self.centre,
            "keep_biases": self.keep_biases,
            "negative_curvature": self.negative_curvature,
            "hessian_examples": self.hessian_examples,
        }

    def key(self) -> dict:
        """What ``run.json`` keeps of the plane, under the names it has always had."""
        return {"reduction_method": self.method, "plane_seed": self.seed, **self.options}

    def made(self, settings: Mapping) -> bool:
        """Whether the plane saved with ``settings`` (a ``run.json``) was made by this spec.

        Custom directions are the caller's vectors, not compared: never taken as made. A setting
        a run saved before it was recorded (missing) is taken as different.
        """
        saved = {"plane_seed": settings.get("seed"), **settings}  # runs saved before had one seed for all
        return self.method != "custom" and all(saved.get(k) == v for k, v in self.key().items())


@dataclass(frozen=True)
class GridSpec(_Spec):
    """Where and how the loss is evaluated: points per axis, the window, the examples, exactness.

    ``resolution`` is ``n`` or ``(nx, ny)``; ``xrange``/``yrange`` ``(low, high)`` or None to fit
    the path; ``subset`` examples (drawn with ``seed``); ``grid`` ``'adaptive'`` (within ``tol``)
    or ``'full'``.
    """

    resolution: int | tuple[int, int] = 100
    xrange: tuple[float, float] | None = None
    yrange: tuple[float, float] | None = None
    subset: int | None = None
    bn_batches: int = 0
    grid: str = "adaptive"
    tol: float = 0.01
    seed: int | None = None

    @staticmethod
    def _check(values: dict, names: dict) -> dict:
        from losstrail._checks import check_tol

        def name(field):
            return names.get(field, field)

        if "resolution" in values:
            values["resolution"] = check_resolution(values["resolution"], name("resolution"))  # a list as a tuple
        for field in ("xrange", "yrange"):
            if values.get(field) is not None:
                values[field] = check_range(name(field), values[field])  # as floats
        grid = check_choice(name("grid"), values.get("grid", "adaptive"), GRIDS)
        if grid == "adaptive":
            check_tol(values.get("tol", 0.01), name("tol"), as_setting=True)
        for field, low in (("subset", 1), ("bn_batches", 0)):
            value = values.get(field)
            if value is not None and (not _is_int(value) or value < low):
                raise ValueError(f"{name(field)}={value!r} must be an integer of at least {low}, or left out")
        _check_seed(values.get("seed"), name("seed"))
        return values

    def replace(self, **changes):
        """A copy with ``changes``, each checked; ``tol`` too when the grid becomes adaptive (a full grid's is not)."""
        if changes.get("grid") == "adaptive":
            changes = {"tol": self.tol, **changes}
        return super().replace(**changes)

    @property
    def subset_seed(self) -> int:
        """The seed of the subset's draw: the grid and the path see the same examples."""
        return 0 if self.seed is None else self.seed

    def key(self) -> dict:
        """What ``run.json`` keeps of the grid, under the names it has always had (``tol`` only when adaptive)."""
        return {
            "resolution": list(self.resolution) if isinstance(self.resolution, tuple) else self.resolution,
            "xrange": None if self.xrange is None else [float(v) for v in self.xrange],
            "yrange": None if self.yrange is None else [float(v) for v in self.yrange],
            "subset": self.subset,
            "bn_batches": self.bn_batches,
            "subset_seed": self.subset_seed,
            "grid": self.grid,
            **({"tol": self.tol} if self.grid == "adaptive" else {}),
        }

    def made(self, settings: Mapping) -> bool:
        """Whether the surface saved with ``settings`` is as good as one this spec would make.

        A full grid is as good as any adaptive one; runs saved before adaptive grids existed were full.
        """
        saved = {"grid": "full", "subset_seed": settings.get("seed") or 0, **settings}
        wanted = self.key()
        if saved["grid"] == "full":
            wanted = {k: v for k, v in wanted.items() if k not in ("grid", "tol")}
        if self.subset is None:  # every example: the seed that would draw a subset does not matter
            wanted.pop("subset_seed")
        return all(saved.get(k) == v for k, v in wanted.items())
