"""GIF output with one palette for the whole animation, written frame by frame.

Quantizing each frame on its own is the slow part of writing a GIF. Every frame here is
the same background with a few moving pixels on top, so the palette is made once (median
cut of the fullest frame) and each distinct colour is mapped to its nearest palette entry
once for the whole animation. A frame stores only the rectangle that changed since the
previous one, with unchanged pixels transparent, compressed (LZW) by Pillow; runs of
frames are drawn and compressed in forked processes, one per core.
"""

from __future__ import annotations

import struct
import sys
import warnings

import numpy as np

# The palette index that means "as in the previous frame"; the other 255 are colours.
TRANSPARENT = 255


def nearest_colours(colours: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index (uint8) of the palette entry nearest to each RGB colour of ``colours`` (N, 3), exactly.

    >>> nearest_colours(np.array([[250, 250, 250], [10, 0, 0]]), np.array([[0, 0, 0], [255, 255, 255]])).tolist()
    [1, 0]
    """
    c = colours.astype(np.float64)  # integers below 2**53: the distances are exact
    pal = palette.astype(np.float64)
    dist = (pal**2).sum(1)[None, :] - 2 * c @ pal.T  # (N, K); |c|^2 is the same along a row
    return dist.argmin(axis=1).astype(np.uint8)


class PaletteMapper:
    """Maps frames that share a background to palette indices quickly.

    Args:
        background: (H, W, 4) uint8 RGBA, the static part of every frame.
        sample: (H, W, 4) uint8 RGBA, a frame with the moving parts drawn, so their colours
            are in the palette.
        reserve: colours that must be in the palette exactly (the paths' colours).
    """

    def __init__(self, background: np.ndarray, sample: np.ndarray, reserve=()):
        from matplotlib.colors import to_rgb
        from PIL import Image

        parts = [background[..., :3], sample[..., :3]]
        if reserve:  # swatches big enough that median cut gives each path colour its own entry
            swatch = np.concatenate([np.full((64, 64, 3), np.round(np.array(to_rgb(c)) * 255)) for c in reserve], 1)
            pad = np.full((64, background.shape[1], 3), 255.0)
            pad[:, : min(swatch.shape[1], pad.shape[1])] = swatch[:, : pad.shape[1]]
            parts.append(pad.astype(np.uint8))
        both = np.ascontiguousarray(np.concatenate(parts, axis=0))
        quantized = Image.fromarray(both).quantize(
            colors=TRANSPARENT, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        colours = np.asarray(quantized.getpalette()[: TRANSPARENT * 3], dtype=np.uint8).reshape(-1, 3)
        self.palette = np.zeros((256, 3), np.uint8)
        self.palette[: len(colours)] = colours
        self._colours = self.palette[: len(colours)]
        # Every RGBA word met so far (sorted) and its palette index.
        self._words = np.empty(0, np.uint32)
        self._index = np.empty(0, np.uint8)
        self._previous: np.ndarray | None = None

    def indices(self, words: np.ndarray) -> np.ndarray:
        """The palette index (uint8) of each RGBA pixel of ``words`` (uint32, one word a pixel)."""
        if len(self._words):
            at = np.searchsorted(self._words, words)
            seen = self._words[np.minimum(at, len(self._words) - 1)] == words
            if seen.all():
                return self._index[at]
            words_new = words[~seen]
        else:
            words_new = words
        new = np.unique(words_new)  # colours met for the first time: few, after the first frame
        merged = np.concatenate([self._words, new])
        order = np.argsort(merged, kind="stable")
        self._words = merged[order]
        rgb = new.view(np.uint8).reshape(-1, 4)[:, :3]
        self._index = np.concatenate([self._index, nearest_colours(rgb, self._colours)])[order]
        return self._index[np.searchsorted(self._words, words)]

    def changed(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The part of ``frame`` (H, W, 4) uint8 RGBA that differs from the previous frame.

        Returns the palette indices of the smallest rectangle holding every changed pixel,
        unchanged pixels in it set to ``TRANSPARENT`` (the GIF keeps what is on screen
        there), and the rectangle's (left, top). Frames must come in order; the first is
        whole. ``frame`` may be overwritten once this returns.
        """
        words = np.ascontiguousarray(frame).view(np.uint32)[..., 0]  # (H, W), one word a pixel
        if self._previous is None:
            self._previous = words.copy()
            return self.indices(words.reshape(-1)).reshape(words.shape), (0, 0)
        diff = words != self._previous
        rows, cols = np.flatnonzero(diff.any(1)), np.flatnonzero(diff.any(0))
        if not len(rows):  # nothing moved: one transparent pixel
            return np.full((1, 1), TRANSPARENT, np.uint8), (0, 0)
        box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        mask = diff[box]
        out = np.full(mask.shape, TRANSPARENT, np.uint8)
        out[mask] = self.indices(words[box][mask])
        np.copyto(self._previous[box], words[box])
        return out, (int(cols[0]), int(rows[0]))


def frame_delays(n: int, fps: float, hold_last_ms: int) -> list[int]:
    """Delays in the GIF's unit (1/100 s) of ``n`` frames, averaging ``fps`` exactly over the animation.

    >>> frame_delays(4, 15, 0)
    [7, 6, 7, 7]
    """
    ends = np.round(np.arange(1, n + 1) * 100.0 / fps).astype(np.int64)
    delays = np.diff(ends, prepend=0)
    delays[-1] = max(int(delays[-1]), -(-hold_last_ms // 10))
    return [max(int(d), 1) for d in delays]


def _compressed(indices: np.ndarray, offset: tuple[int, int], delay: int) -> bytes:
    """One frame's control block, image descriptor and LZW data (Pillow's encoder)."""
    from PIL import GifImagePlugin, Image

    image = Image.frombuffer("P", indices.shape[::-1], np.ascontiguousarray(indices), "raw", "P", 0, 1)
    return b"".join(GifImagePlugin.getdata(image, offset, duration=delay * 10, disposal=1, transparency=TRANSPARENT))


def _header(size: tuple[int, int], palette: np.ndarray) -> bytes:
    """GIF89a header: screen size, the 256-colour global palette, loop forever."""
    width, height = size
    screen = struct.pack("<6sHHBBB", b"GIF89a", width, height, 0xF7, 0, 0)  # 0xF7: global table of 2**8
    loop = b"!\xff\x0bNETSCAPE2.0" + struct.pack("<BBHB", 3, 1, 0, 0)
    return screen + palette.astype(np.uint8).tobytes() + loop


def _encoded(figure, frames: list[int], mapper: PaletteMapper, delays: list[int], start: int, stop: int):
    """Compressed frames ``start`` to ``stop - 1`` of ``frames``, one ``bytes`` each.

    A part that does not start at the first frame draws the frame before it first, so the
    bytes are exactly those of a run through every frame in order.
    """
    if start > 0:
        mapper.changed(figure.rgba(frames[start - 1], copy=False))
    for i in range(start, stop):
        yield _compressed(*mapper.changed(figure.rgba(frames[i], copy=False)), delays[i])


# What a forked worker renders from: (figure, frames, mapper, delays), set just before the fork.
_job: tuple | None = None


def _encoded_part(span: tuple[int, int]) -> bytes:
    return b"".join(_encoded(*_job, *span))


def render_workers(n_frames: int) -> int:
    """Processes to draw an animation of ``n_frames`` with: the usable cores, up to 8, where fork is.

    Forked workers start at once with the figure already drawn; elsewhere (or for a few
    frames, or inside a daemon process, which may not have children) frames are drawn here.
    """
    import multiprocessing
    import os

    if not hasattr(os, "fork") or sys.platform == "darwin" or n_frames < 40:
        return 1
    if multiprocessing.current_process().daemon:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 8))


def write_gif(figure, frames, path, *, fps: float, quiet: bool = False, workers: int | None = None,
              hold_last_ms: int = 1500) -> int:  # fmt: skip
    """Write frames ``frames`` of ``figure`` as a looping GIF at ``fps``; returns the frame count.

    ``figure`` is anything with ``rgba(k, copy)``, ``background_rgba()`` and ``size``
    (optionally ``colours``, the path colours the palette must hold). With ``workers > 1``
    (default: ``render_workers``) forked processes draw and compress consecutive runs of
    frames; the file is byte for byte the one a single process writes. The last frame is
    held for ``hold_last_ms`` so the end of training can be read.
    """
    global _job
    import multiprocessing

    from losstrail._progress import bar

    frames = [int(k) for k in frames]
    n = len(frames)
    mapper = PaletteMapper(figure.background_rgba(), figure.rgba(frames[-1]), getattr(figure, "colours", ()))
    delays = frame_delays(n, fps, hold_last_ms)
    workers = render_workers(n) if workers is None else max(1, min(int(workers), n))
    with open(path, "wb") as f, bar(n, "rendering", quiet, unit="frame") as progress:
        f.write(_header(figure.size, mapper.palette))
        if workers == 1:
            for data in _encoded(figure, frames, mapper, delays, 0, n):
                f.write(data)
                progress.update(1)
        else:
            # A few runs per worker keep them busy to the end; each run costs one extra frame.
            edges = np.linspace(0, n, min(n, 6 * workers) + 1).round().astype(int)
            spans = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
            _job = (figure, frames, mapper, delays)
            try:
                with warnings.catch_warnings():
                    # Python 3.12+ warns about forking a process with threads (torch's thread
                    # pool): the workers only draw with matplotlib and Pillow, never torch.
                    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                    pool = multiprocessing.get_context("fork").Pool(workers)
                with pool:
                    for (start, stop), data in zip(spans, pool.imap(_encoded_part, spans)):
                        f.write(data)
                        progress.update(stop - start)
            finally:
                _job = None
        f.write(b";")
    return n
