"""Picture formats by name: what each is, how a notebook shows it, and the function that writes it.

A format names the picture's medium: an animation (gif, mp4) is a figure's frames in time, a still
(png, pdf, svg) one frame of it, a page (html) an interactive plotly page drawn from the values
themselves. The view (``'2d'`` contour or ``'3d'`` surface, ``Style.view``) names the figure, which
every medium draws. The names and media are also ``losstrail._registry``'s (``FORMATS``, ``MEDIA``),
which the CLI, ``Style`` and the error messages read without importing any of this; a test checks
that the two agree, and that the README's table of outputs lists exactly these.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from losstrail._registry import FORMATS, check_choice, medium

__all__ = ["PICTURES", "PictureFormat", "picture_format"]


@dataclass(frozen=True)
class PictureFormat:
    """One picture format, written to files named ``*.{name}``.

    ``writer`` and ``requires`` are ``'module:function'``, imported when called, so that drawing in
    one format never loads another's libraries. A medium's writer takes: an animation's
    ``(figure, frames, path, *, fps, quiet)``; a still's ``(figure, k, path, format)``; a page's
    ``(runs, surface, path, *, style, colours or captured)``.
    """

    name: str  # the format, and the file's suffix
    mime: str
    shown: str  # how a notebook shows it inline: 'img', 'video', 'iframe', or 'path' (its name only)
    writer: str
    requires: str | None = None  # raises ModuleNotFoundError naming the extra to install, if one is missing

    @property
    def medium(self) -> str:
        """``'animation'``, ``'still'`` or ``'page'``: the cheap registry's (``losstrail._registry.MEDIA``)."""
        return medium(self.name)

    def write(self, *args, **kwargs):
        """Call this format's writer with the arguments its medium takes."""
        return _load(self.writer)(*args, **kwargs)

    def check_installed(self) -> None:
        """Raise ModuleNotFoundError naming what to install when this format cannot be written here."""
        if self.requires is not None:
            _load(self.requires)()


def _load(reference: str):
    """The function ``'module:function'`` names, looked up when called (a test may have replaced it)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


_STILL = "losstrail.renderers._figure:save_still"
PICTURES = {
    picture.name: picture
    for picture in (
        PictureFormat("gif", "image/gif", "img", "losstrail.renderers.gif:write_gif"),
        PictureFormat("mp4", "video/mp4", "video", "losstrail.renderers.mp4:write_figure_mp4",
                      requires="losstrail.renderers.mp4:check_ffmpeg"),
        PictureFormat("html", "text/html", "iframe", "losstrail.renderers.html:write_html",
                      requires="losstrail.renderers.html:check_plotly"),
        PictureFormat("png", "image/png", "img", _STILL),
        PictureFormat("pdf", "application/pdf", "path", _STILL),
        PictureFormat("svg", "image/svg+xml", "img", _STILL),
    )
}  # fmt: skip


def picture_format(name: str) -> PictureFormat:
    """The registered format ``name`` (as ``_checks.output_format`` returns it).

    >>> picture_format("mp4").medium
    'animation'
    """
    return PICTURES[check_choice("format", name, FORMATS)]
