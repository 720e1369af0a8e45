"""MP4 (H.264) output through the ffmpeg binary that ``imageio-ffmpeg`` ships."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def check_ffmpeg() -> None:
    """Raise ModuleNotFoundError naming the extra to install when no ffmpeg is available."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as err:
        raise ModuleNotFoundError(
            f"MP4 output needs the ffmpeg binary of imageio-ffmpeg ({err}); "
            "install it with: pip install 'losstrail[mp4]', or write a .gif instead"
        ) from None


def even_size(width: int, height: int) -> tuple[int, int]:
    """The frame size H.264 in yuv420p accepts: both sides even (odd ones grow by a pixel).

    >>> even_size(901, 600)
    (902, 600)
    """
    return width + width % 2, height + height % 2


def write_figure_mp4(figure, frames, path, *, fps: float, quiet: bool = False) -> int:
    """Write frames ``frames`` of ``figure`` (with ``rgba(k, copy)`` and ``size``) as an MP4; returns the count."""
    from losstrail._progress import track

    frames = list(frames)
    rgba = track((figure.rgba(k, copy=False) for k in frames), len(frames), "rendering", quiet, unit="frame")
    return write_mp4(rgba, path, fps=fps, size=figure.size)


def write_mp4(frames: Iterable[np.ndarray], path, *, fps: float, size: tuple[int, int], crf: int = 20) -> int:
    """Write (H, W, 4) uint8 RGBA ``frames`` of ``size`` (W, H) as an H.264 MP4 that browsers play; returns the count.

    An odd width or height is padded by one white pixel rather than refused.
    """
    import imageio_ffmpeg

    check_ffmpeg()
    width, height = size
    out_w, out_h = even_size(width, height)
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (out_w, out_h),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        quality=None,
        output_params=["-crf", str(crf), "-preset", "veryfast", "-movflags", "+faststart"],
        ffmpeg_log_level="error",
    )
    writer.send(None)
    count = 0
    canvas = np.full((out_h, out_w, 3), 255, np.uint8)
    try:
        for frame in frames:
            canvas[:height, :width] = frame[..., :3]
            writer.send(canvas)
            count += 1
    finally:
        writer.close()
    _check_finished(path)
    return count


def _check_finished(path) -> None:
    """Raise OSError unless ffmpeg wrote a whole MP4: its index (``moov`` box) is there.

    ffmpeg that runs out of disk says so on stderr and still exits; the file it leaves does not play.
    """
    import struct

    boxes = []
    try:
        with open(path, "rb") as f:
            while len(boxes) < 64:
                head = f.read(8)
                if len(head) < 8:
                    break
                size, kind = struct.unpack(">I4s", head)
                if size == 1:
                    size = struct.unpack(">Q", f.read(8))[0] - 8
                boxes.append(kind)
                if size < 8:
                    break
                f.seek(size - 8, 1)
    except OSError:
        boxes = []
    if b"moov" not in boxes or b"mdat" not in boxes:
        raise OSError(
            f"ffmpeg did not finish the MP4 (no {'index' if b'mdat' in boxes else 'video data'} in it): "
            "the disk may be full or ffmpeg was stopped; free some space and render again"
        )
