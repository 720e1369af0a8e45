"""GIF output through Pillow, with one palette for the whole animation.

Quantizing each frame on its own is the slow part of writing a GIF. Every frame here is
the same background with a few moving pixels on top, so the background is quantized once
and only the pixels that differ from it are mapped, each distinct colour once, to the
nearest colour of a palette made from the fullest frame.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# The palette index that means "as in the previous frame"; the other 255 are colours.
TRANSPARENT = 255


def nearest_colours(colours: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index (uint8) of the palette entry nearest to each RGB colour of ``colours`` (N, 3), exactly.

    >>> nearest_colours(np.array([[250, 250, 250], [10, 0, 0]]), np.array([[0, 0, 0], [255, 255, 255]])).tolist()
    [1, 0]
    """
    c = colours.astype(np.int32)
    pal = palette.astype(np.int32)
    dist = (c**2).sum(1)[:, None] - 2 * c @ pal.T + (pal**2).sum(1)[None, :]  # (N, K)
    return dist.argmin(axis=1).astype(np.uint8)


class PaletteMapper:
    """Maps frames that share a background to palette images quickly.

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
        self._previous: np.ndarray | None = None
        self._background = np.ascontiguousarray(background).view(np.uint32).reshape(-1)  # (H * W,)
        self._background_index = np.asarray(quantized)[: background.shape[0]].copy()
        self._colours = self.palette[: len(colours)]
        self._flat_palette = self.palette.ravel().tolist()

    def to_image(self, frame: np.ndarray):
        """A Pillow 'P' image of ``frame`` (H, W, 4) uint8 RGBA, for frames passed in order.

        After the first frame, pixels that equal the previous frame's are the transparent
        index: the GIF keeps what is already on screen there, and long runs of one index
        compress to almost nothing (a frame with a moving panel cursor stays small).
        """
        from PIL import Image

        words = np.ascontiguousarray(frame).view(np.uint32).reshape(-1)  # one word a pixel
        changed = np.flatnonzero(words != self._background)
        index = self._background_index.copy()
        distinct, which = np.unique(words[changed], return_inverse=True)  # few colours, many pixels
        rgb = distinct.view(np.uint8).reshape(-1, 4)[:, :3]
        index.reshape(-1)[changed] = nearest_colours(rgb, self._colours)[which]
        shown = index
        if self._previous is not None:
            shown = np.where(index == self._previous, np.uint8(TRANSPARENT), index)
        self._previous = index
        image = Image.frombuffer("P", (shown.shape[1], shown.shape[0]), shown, "raw", "P", 0, 1)
        image.putpalette(self._flat_palette)
        image.info["transparency"] = TRANSPARENT
        return image


def write_gif(
    frames: Iterable[np.ndarray], path, *, fps: float, mapper: PaletteMapper, hold_last_ms: int = 1500
) -> int:
    """Write (H, W, 4) uint8 RGBA ``frames`` as a looping GIF at ``fps``; returns the frame count.

    The last frame is held for ``hold_last_ms`` so the end of training can be read.
    """
    images = [mapper.to_image(f) for f in frames]
    duration = 1000.0 / fps
    durations = [duration] * len(images)
    durations[-1] = max(duration, hold_last_ms)
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=durations,
        loop=0,
        optimize=False,
        disposal=1,
        transparency=TRANSPARENT,
    )
    return len(images)
