"""The growing lists behind every recorder (``Recorder``, Lightning's ``TrajectoryRecorder``, the HF callback).

A path that fits ``memory_limit`` keeps every row, in memory. Past it the rows go to
``params.bin`` in the run's storage (a temporary folder, removed afterwards, when none is given),
every row while there are at most ``snapshots`` of them. A longer path is kept *sketched*: at
most ``snapshots`` evenly spaced rows (float16 unless a dtype is chosen) for frames and
projections, every step's loss, and a Frequent Directions sketch of every row for PCA
(``losstrail.planes.pca.FrequentDirections``), in no more memory than ``memory_limit``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from losstrail._memory import give_back_freed_memory
from losstrail.evaluation.layout import ParamLayout
from losstrail.planes.pca import FrequentDirections, sketch_bytes, sketch_rows_within
from losstrail.values.trajectory import PARAMS_FILE, PathSketch, Trajectory

# The most rows a path longer than its memory keeps: enough for a smooth animation (at most 300
# frames by default), and 160 float16 rows of a 5.25M-parameter model take 1.7 GB of disk.
SNAPSHOTS = 160
SNAPSHOT_DTYPE = "float16"  # rows of a sketched path, unless the recorder was given a dtype


class RowFile:
    """Rows of one width appended to a file in ``dtype``; ``keep`` drops rows in place, ``finish`` maps them.

    The row storage a checkpoint loader can reuse: ``append`` one (P,) row at a time, then
    ``finish`` gives a read-only (rows, P) memory map of the file. The file keeps its length
    when ``keep`` drops rows (it is cut to the rows kept by ``finish``): a row appended
    afterwards overwrites pages the file already has, several times faster than growing it.

    A row is written by a thread while the caller goes on (a 10 MB row into a growing file took
    40 ms here, half a training step of the 5.25M-parameter MLP, most of it waiting on the kernel's
    page cache): at most one row is in flight, so the caller may reuse a row's memory once it has
    appended the next one, or after ``wait``.
    """

    def __init__(self, path: Path, dtype, width: int):
        self.path, self.dtype, self.width = Path(path), np.dtype(dtype), width
        self.count = 0
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    @property
    def row_bytes(self) -> int:
        return self.width * self.dtype.itemsize

    def append(self, row: np.ndarray) -> None:
        self.wait()
        data = np.ascontiguousarray(row, dtype=self.dtype)  # the row given, not a copy, when it is in ``dtype``
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="losstrail-rows")
        self._pending = self._writer.submit(self._write, data, self.count)
        self.count += 1

    def wait(self) -> None:
        """Until the row in flight is written; its error (a full disk) is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _write(self, row: np.ndarray, index: int) -> None:
        view, offset = memoryview(row).cast("B"), index * self.row_bytes
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def read(self, index: int) -> np.ndarray:
        self.wait()
        row = np.empty(self.width, self.dtype)
        view, offset = memoryview(row).cast("B"), index * self.row_bytes
        while view:
            got = os.preadv(self._fd, [view], offset)
            if got == 0:
                raise OSError(f"{self.path} ends before row {index}")
            view, offset = view[got:], offset + got
        return row

    def keep(self, positions) -> None:
        """Keep only the rows at ``positions`` (increasing), moved to the front in order."""
        for slot, position in enumerate(positions):
            if slot != position:
                self._write(self.read(position), slot)
        self.count = len(positions)

    def finish(self) -> np.memmap:
        self._close(self.count * self.row_bytes)  # the rows dropped by ``keep`` go
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count, self.width))

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._close(None)
        self.path.unlink(missing_ok=True)

    def _close(self, length: int | None) -> None:
        try:
            self.wait()
            if length is not None:
                os.ftruncate(self._fd, length)
        finally:
            os.close(self._fd)
            if self._writer is not None:
                self._writer.shutdown()


class Points:
    """The growing lists behind a recorder; ``freeze`` turns them into a ``Trajectory``.

    ``plan(rows)`` (when the recorder knows how many rows the path will have) says the size of a
    path that will not fit ``memory_limit`` and keeps it sketched from the start; without it a
    path becomes sketched when it first passes both ``memory_limit`` and ``snapshots`` rows.
    """

    def __init__(self, storage=None, dtype: str | None = None, memory_limit: int = 1 << 30,
                 snapshots: int = SNAPSHOTS, quiet: bool = False):  # fmt: skip
        self.layout: ParamLayout | None = None  # what is recorded, set by the recorder
        self.params: list[np.ndarray] = []  # rows in memory
        self.loss: list[float] = []  # these four: every recorded step
        self.accuracy: list[float] = []
        self.step: list[int] = []
        self.epoch: list[int] = []
        self.dtype = np.dtype(dtype) if dtype is not None else np.dtype("float32")
        self.snapshot_dtype = np.dtype(dtype) if dtype is not None else np.dtype(SNAPSHOT_DTYPE)
        self.storage = None if storage is None else Path(storage)
        self.memory_limit, self.snapshots, self.quiet = memory_limit, snapshots, quiet
        self._rows: RowFile | None = None  # rows on disk: every row, or the snapshots of a sketched path
        self._kept: list[int] = []  # a sketched path: the recorded steps (indices) its snapshots are
        self._stride = 1
        self._sketched = False
        self._sketch: FrequentDirections | None = None
        self._sketcher: ThreadPoolExecutor | None = None  # a sketched path: adds rows to the sketch behind the loop
        self._last_job: Future | None = None  # the row being sketched
        self._newest: torch.Tensor | None = None  # a sketched path: the last row, kept even if no snapshot
        self._spares: tuple[torch.Tensor, torch.Tensor] | None = None  # a sketched path: see spare_row
        self._snapshot_rows: list[torch.Tensor] | None = None  # a sketched path: snapshots before they are written
        self._folder: Path | None = None  # the temporary folder, when no storage was given
        self._cleanup = None
        self._planned: int | None = None  # the rows ``plan`` was told of

    # -- where rows go ---------------------------------------------------------------------------
    def _open_rows(self, dtype, width: int) -> RowFile:
        if self.storage is not None:
            self.storage.mkdir(parents=True, exist_ok=True)
            folder = self.storage
        else:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="losstrail-path-"))
                self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
            folder = self._folder
        return RowFile(folder / PARAMS_FILE, dtype, width)

    def plan(self, rows: int | None, n_params: int | None = None) -> None:
        """Say and prepare for a path of ``rows`` rows of ``n_params`` (default: the layout's) before recording.

        Only a path that will not fit ``memory_limit`` is said; one of at most ``snapshots`` rows
        then keeps every row on disk, a longer one is sketched from its first row.
        """
        P = n_params if n_params is not None else (self.layout.n_params if self.layout is not None else None)
        if rows is None or P is None:
            return
        self._planned = rows
        if rows * P * self.dtype.itemsize <= self.memory_limit:
            return
        if rows <= self.snapshots:
            self._say(f"the path will take {_size(rows, P, self.dtype)}, more than memory_limit="
                      f"{_bytes(self.memory_limit)}: its rows go to {self._where()}")  # fmt: skip
            return
        self._stride = max(1, math.ceil((rows - 1) / (self.snapshots - 1)))
        self._sketched = True
        self._say(self._sketch_line(rows, P))

    def _sketch_line(self, rows: int, P: int) -> str:
        kept = min(rows, math.ceil((rows - 1) / self._stride) + 1)
        sketch = self._sketch_part(P)
        return (
            f"the path will take {_size(rows, P, self.dtype)}, more than memory_limit={_bytes(self.memory_limit)}: "
            f"keeping every step's loss, {kept} evenly spaced {self.snapshot_dtype} snapshots "
            f"({_bytes(kept * P * self.snapshot_dtype.itemsize)}, in {self._where()}) and {sketch}"
        )

    def _sketch_part(self, P: int) -> str:
        width = sketch_rows_within(P, self.memory_limit)
        if not width:
            return "no PCA sketch (memory_limit holds none: PCA will use the snapshots)"
        return f"a sketch of every step for PCA ({width} rows, {_bytes(sketch_bytes(width, P))} of memory)"

    def _where(self) -> str:
        return str(self.storage) if self.storage is not None else "a temporary folder"

    def _say(self, message: str) -> None:
        if not self.quiet:
            from losstrail.evaluation.evaluator import note

            note(message)

    # -- recording ------------------------------------------------------------------------------
    def add(self, params: torch.Tensor, step: int, epoch: int) -> None:
        row = params.detach().to("cpu", torch.float32)
        index = len(self.step)
        self.loss.append(math.nan)
        self.accuracy.append(math.nan)
        self.step.append(step)
        self.epoch.append(epoch)
        if self._sketched:
            self._add_sketched(row, index)
            return
        row = row.numpy().astype(self.dtype, copy=False)  # the row given is not changed afterwards: no copy
        # The rows held, this one and the one the recorder holds for the next step stay within memory_limit,
        # and for a path of unknown length, with room for the sketch's running sums it may turn into.
        reserve = 2 * row.nbytes + (sketch_bytes(0, row.shape[0]) if self._planned is None else 0)
        if self._rows is None and len(self.params) * row.nbytes + reserve > self.memory_limit:
            if self._planned is None:  # a path of unknown length: its every row would not fit the disk either
                self._sketch_held(row)
                return
            self._rows = self._open_rows(self.dtype, row.shape[0])  # spill what is kept, then every row
            for kept in self.params:
                self._rows.append(kept)
            self.params = []
            give_back_freed_memory()  # before anything else takes that much memory
        if self._rows is None:
            self.params.append(row)
            return
        self._rows.append(row)
        if self._rows.count > self.snapshots:  # longer than planned: sketched from here on
            self._start_sketch()

    def measure(self, loss: float, accuracy: float) -> None:
        self.loss[-1] = loss
        self.accuracy[-1] = accuracy

    def _add_sketched(self, row: torch.Tensor, index: int) -> None:
        if self._rows is None:
            self._begin_sketch(row)
        if self._sketch is not None:
            self._sketch_behind(row)
        self._newest = row  # not a copy: a row given to ``add`` is not changed until the next is given
        if index % self._stride == 0:
            self._rows.append(self._snapshot(row))
            self._kept.append(index)
            if len(self._kept) > self.snapshots:
                self._rows.keep(range(0, len(self._kept), 2))
                self._kept = self._kept[::2]
                self._stride *= 2

    def _sketch_behind(self, row: torch.Tensor) -> None:
        """Add ``row`` to the sketch on a thread of its own while training goes on (one sweep over the row and the
        shrinks: 14 ms of the 5.25M-parameter MLP's step here, on a core the loop leaves free).

        One row at a time: the one before is sketched first, so rows enter in order, a recorder's spare row is
        not handed out again while the sketch reads it (``spare_row``), and no more than one row given waits.
        """
        self._sketched_row()
        if self._sketcher is None:
            self._sketcher = ThreadPoolExecutor(1, thread_name_prefix="losstrail-sketch")
        self._last_job = self._sketcher.submit(self._sketch.add, row)

    def _sketched_row(self) -> None:
        """Until the row given last is in the sketch (its error, if any, raised here)."""
        job, self._last_job = self._last_job, None
        if job is not None:
            job.result()

    def _sketched_all(self) -> None:
        """Until every row given is in the sketch; a sketch that met a non-finite row (training diverged) is
        dropped: PCA of the finite snapshots (finite_prefix) is all that is left."""
        self._sketched_row()
        if self._sketcher is not None:
            self._sketcher.shutdown()
            self._sketcher = None
        if self._sketch is not None and not self._sketch.finite:
            self._sketch = None

    def _snapshot(self, row: torch.Tensor) -> np.ndarray:
        """The row in the snapshots' dtype, converted by torch (NumPy's float16 conversion is several times slower).

        Converted into two tensors in turn, one of them being written while the other is filled
        (``RowFile`` has one row in flight): a new one each time would have its pages zeroed by the
        kernel first, as long again as the conversion.
        """
        dtype = getattr(torch, self.snapshot_dtype.name)
        if row.dtype == dtype:
            return row.numpy()  # written from the row itself: spare_row hands it out again only once written
        if self._snapshot_rows is None:
            self._snapshot_rows = [torch.empty(row.shape, dtype=dtype) for _ in range(2)]
        self._snapshot_rows.reverse()
        return self._snapshot_rows[0].copy_(row).numpy()

    def spare_row(self) -> torch.Tensor | None:
        """A float32 (P,) tensor a recorder may fill with the row it gives next, or None: a new one is needed.

        Rows given to a sketched path are sketched and let go, but the newest (kept for the final
        snapshot): the recorder's rows take turns in two tensors, so a step allocates nothing (a
        new 20 MB tensor has its pages zeroed by the kernel, several times the cost of the copy).
        Before the path is sketched every row given is kept, so None.
        """
        if not self._sketched or self.layout is None:
            return None
        if self._spares is None:
            self._spares = (torch.empty(self.layout.n_params), torch.empty(self.layout.n_params))
        newest = self._newest.data_ptr() if self._newest is not None else None
        spare = self._spares[1] if self._spares[0].data_ptr() == newest else self._spares[0]
        if self._rows is not None and self._snapshot_rows is None:  # snapshots written from the rows themselves
            self._rows.wait()
        return spare

    def _begin_sketch(self, first: torch.Tensor) -> None:
        P = first.numel()
        width = sketch_rows_within(P, self.memory_limit)
        self._sketch = FrequentDirections(first, width) if width and bool(torch.isfinite(first).all()) else None
        self._rows = self._open_rows(self.snapshot_dtype, P)

    def _sketch_held(self, row: np.ndarray) -> None:
        """A path of unknown length passed ``memory_limit`` in memory: sketch its rows, each let go once sketched."""
        held, self.params = [*self.params, row], []
        self._stride, self._sketched = 1, True
        self._say_sketched(row.shape[0])
        for index in range(len(held)):
            self._add_sketched(torch.from_numpy(held[index].astype(np.float32, copy=False)), index)
            held[index] = None
        self._sketched_row()
        give_back_freed_memory()

    def _say_sketched(self, n_params: int) -> None:
        self._say(
            f"the path passed memory_limit={_bytes(self.memory_limit)} at step {self.step[-1]} (its length unknown: "
            f"pass steps= to plan it): from now on keeping every step's loss, at most {self.snapshots} evenly spaced "
            f"{self.snapshot_dtype} snapshots in {self._where()} and {self._sketch_part(n_params)}"
        )

    def _start_sketch(self) -> None:
        """Every row so far is on disk and there are more than ``snapshots``: from now on, keep a sketched path."""
        every, n = self._rows, self._rows.count
        self._stride, self._sketched = 1, True
        self._say_sketched(every.width)
        every.path = every.path.rename(every.path.with_name(PARAMS_FILE + ".every"))
        self._rows = None
        for index in range(n):
            self._add_sketched(torch.from_numpy(every.read(index).astype(np.float32)), index)
        every.discard()

    # -- the result ------------------------------------------------------------------------------
    def freeze(self) -> Trajectory:
        if not self.step:
            raise RuntimeError("nothing was recorded: the training loop ran no step")
        layout = self.layout
        subset = layout is not None and not layout.everything
        names = tuple(layout.names) if subset else None
        shapes = tuple(tuple(s) for s in layout.shapes) if subset else None
        every = {
            "loss": np.asarray(self.loss, dtype=np.float64),
            "accuracy": np.asarray(self.accuracy, dtype=np.float64),
            "step": np.asarray(self.step, dtype=np.int64),
            "epoch": np.asarray(self.epoch, dtype=np.int64),
        }
        if not self._sketched:
            params = self._mapped() if self._rows is not None else np.stack(self.params)
            return Trajectory(params=params, **every, names=names, shapes=shapes)
        last = len(self.step) - 1
        if self._kept[-1] != last:
            self._rows.append(self._snapshot(self._newest))
            self._kept.append(last)
        self._sketched_all()
        sketch = self._sketch_value(every)
        kept = np.asarray(self._kept)
        rows = {name: values[kept] for name, values in every.items()}
        return Trajectory(params=self._mapped(), **rows, names=names, shapes=shapes, sketch=sketch)

    def _sketch_value(self, every: dict) -> PathSketch:
        if self._sketch is None:
            variances, directions, total, shrinkage = np.zeros(0), None, math.nan, math.inf
        else:
            variances, directions, total, shrinkage = self._sketch.result()
            self._sketch = None  # its memory goes back now
        return PathSketch(**every, variances=np.asarray(variances, dtype=np.float64), total_variance=float(total),
                          shrinkage=float(shrinkage), directions=directions)  # fmt: skip

    def _mapped(self) -> np.memmap:
        """The rows on disk as a read-only memory map; a temporary folder goes as soon as nothing maps it."""
        params = self._rows.finish()
        self._rows = None
        if self._folder is not None:
            try:  # POSIX: the mapping keeps the file's data until it is closed
                shutil.rmtree(self._folder)
                self._cleanup.detach()
            except OSError:  # the file is still open (Windows): removed when the rows are
                self._cleanup.detach()
                weakref.finalize(params, shutil.rmtree, self._folder, True)
        return params


def _bytes(n: float) -> str:
    """``1.0 GiB``, ``21.0 MB``: a size in the unit people read.

    >>> _bytes(1 << 30), _bytes(1_052_000_000), _bytes(42_000_000_000), _bytes(2_100_000)
    ('1.0 GiB', '1.05 GB', '42.0 GB', '2.1 MB')
    """
    if n >= 1 << 30 and n % (1 << 20) == 0:
        return f"{n / (1 << 30):.1f} GiB"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.{2 if unit == 'GB' and n < 10 * size else 1}f} {unit}"
    return f"{int(n)} bytes"


def _size(rows: int, n_params: int, dtype) -> str:
    return (
        f"{rows:,} points × {n_params:,} parameters = {_bytes(rows * n_params * np.dtype(dtype).itemsize)} in {dtype}"
    )


def as_float(value) -> float:
    """A loss or accuracy as a Python float: a tensor's mean, or the number itself."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)
