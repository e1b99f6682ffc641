"""Per-class sorted scores on a grid: exact decision counts and surrogate-gradient sums in O(C) per step.

The SGL-Thresh gradient of any count-based objective ``F(tp, pp)`` with respect to the
threshold ``t_c`` of class ``c`` is

    dF/dt_c = -(dF/dtp_c * Kpos_c(t_c) + dF/dpp_c * Kall_c(t_c)),
    K_c(t)  = sum_i a * sigmoid(a (s_ic - t)) * sigmoid(-a (s_ic - t))

over the class's positive scores (Kpos) or all its scores (Kall). ``K_c(t)`` is a
logistic-kernel density of the scores, a smooth function of ``t`` with a length scale of
``1/a``: it is computed once for every class on a grid of step ``grid_step / a`` (linear binning
of the scores, then an FFT convolution with the kernel) and read off by linear interpolation.
Both errors are of order ``grid_step**2``, far below what moves an Adam step.

The counts ``tp_c`` and ``pp_c`` of ``s > t`` are exact. The same grid's bins hold, per class,
how many of its scores (and of its positives) lie below each bin's lower edge; the next
``WINDOW`` sorted scores from there are compared with the threshold (a binary search finishes
the rare class whose bin holds more scores at or below it). One SGL epoch costs a few gathers
per class instead of passes over ``N x C`` scores.

Building the index costs one transposed copy and one sort of the scores (float32, one row per
class), a binary search of the grid's edges in each row, and the kernel grid.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from calitag._host import usable_cpus
from calitag.errors import CalibrationError

#: Kernel half-width in units of 1/slope; sigmoid'(40) ~ 4e-18, below float64 resolution of any sum.
KERNEL_HALF_WIDTH_Z = 40.0
#: Largest grid allowed, to bound memory (per class and node: two float64 kernel sums, two int32 counts).
MAX_GRID = 1 << 16
#: Grid step of an index built without a slope (counts only).
COUNT_GRID_STEP = 1.0 / 1024
#: Classes sorted and tabulated together (a block of rows that stays in cache).
CHUNK_CLASSES = 32
#: Classes whose positives are counted and tabulated together (bounds the temporaries).
BLOCK_CLASSES = 1024
#: Largest index built, in bytes (per class: its padded scores, and per grid node two int32 counts and,
#: with a slope, two float64 kernel sums: ~24 KB a class at the default slope).
MAX_INDEX_BYTES = 2 << 30
#: Scores of a threshold's bin compared at once (a bin rarely holds more); every row is followed
#: by at least this many pads.
WINDOW = 8
# Crowded bins searched one at a time up to this many per query (a binary search over all of them beyond).
_FEW_SEARCHES = 16
# Rows are padded with this value, above every score and threshold.
_PAD = np.float32(1.5)


def _keys(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Sort keys ``class * 2**32 + bits(value)`` (int64) of float32 values in [0, 1.5].

    The bit pattern of a non-negative float32 orders like its value, so keys of one class
    order like its scores and all keys order class-major (a float64 ``score + 2 * class``
    would round scores below ~1e-13 to 0). -0.0 counts as 0.0.
    """
    values = np.asarray(values, dtype=np.float32) + np.float32(0.0)  # -0.0 + 0.0 == +0.0
    return values.view(np.int32).astype(np.int64) + (np.asarray(classes, dtype=np.int64) << 32)


def _bin_sorted_rows(part: np.ndarray, below: np.ndarray, *, n_clips: int, step: float) -> np.ndarray:
    """Linear-binning weights of each row of ascending scores on nodes ``0, step, 2 step, ...``.

    ``part`` is (k, n_padded) float32: each row's ``n_clips`` scores ascending, then padding.
    ``below`` is (k, n_nodes): how many of the row's scores lie below node j's edge (the float32
    ``j * step``), so bin j (from edge j to edge j + 1) holds ``below[:, j + 1] - below[:, j]``
    scores; every score lies below the last edge. Returns (k, n_nodes) float64: each score at
    position ``p = score / step`` gives ``1 - (p - j)`` to the node j of its bin and ``p - j``
    to node j + 1, so the kernel sums built from it are second-order accurate in the step.
    The sums over every bin of every row come from one ``reduceat`` over the block of rows.
    """
    k, n_padded = part.shape
    n_nodes = below.shape[1]
    # Bin boundaries per row, the last one where the padding starts.
    bounds = np.empty((k, n_nodes + 1), dtype=np.int64)
    bounds[:, :n_nodes] = below
    bounds[:, n_nodes] = n_clips
    count = np.diff(bounds, axis=1)
    # Segments for reduceat: every non-empty bin plus the padding of each row, all ascending.
    segment = np.ones((k, n_nodes + 1), dtype=bool)
    segment[:, :n_nodes] = count > 0
    starts = (bounds + (np.arange(k, dtype=np.int64) * n_padded)[:, None])[segment]
    sums = np.add.reduceat(part.reshape(-1), starts, dtype=np.float64)
    filled = segment.copy()
    filled[:, n_nodes] = False  # the padding's segment is not a bin
    flat = np.flatnonzero(filled)  # (row, bin) of each non-empty bin, as row * (n_nodes + 1) + bin
    sums = sums[filled[segment]]
    in_bin = count.reshape(-1)[flat - flat // (n_nodes + 1)].astype(np.float64)
    node = (flat % (n_nodes + 1)).astype(np.float64)
    # Sum over each bin's members of (position - node): the weight they pass to the next node.
    upper = sums / step - node * in_bin
    grid = np.zeros(k * (n_nodes + 1))
    grid[flat] = in_bin - upper
    grid[flat + 1] += upper
    return grid.reshape(k, n_nodes + 1)[:, :n_nodes]


def _bin_scores(local: np.ndarray, column: np.ndarray, *, n_classes: int, step: float, n_nodes: int) -> np.ndarray:
    """The same linear binning for scattered scores (``local[i]`` belongs to class ``column[i]``)."""
    position = local.astype(np.float64) / step
    node = np.minimum(np.floor(position), n_nodes - 2)
    upper = position - node
    flat = column * n_nodes + node.astype(np.int64)
    size = n_classes * n_nodes
    grid = np.bincount(flat, weights=1.0 - upper, minlength=size) + np.bincount(flat + 1, weights=upper, minlength=size + 1)[:size]
    return grid.reshape(n_classes, n_nodes)


def _fft_size(minimum: int) -> int:
    """The smallest length ``m * 2**i`` (``m`` in 1, 3, 5, 15) at or above ``minimum``.

    numpy's pocketfft is fastest on lengths with a large power of two; one factor 3 or 5 costs
    little and avoids nearly doubling the length (1920 rather than 2048 for the default grid,
    measured 25 % faster; 5120 rather than 8192 for a 0.02 grid).
    """
    sizes = []
    for odd in (1, 3, 5, 15):
        power = 1
        while odd * power < minimum:
            power *= 2
        sizes.append(odd * power)
    return min(sizes)


def _convolve_kernel(grid: np.ndarray, *, step_z: float, slope: float) -> np.ndarray:
    """Kernel sums ``sum_b grid[b] * a * sig(z) * sig(-z)``, ``z = (b - j) * step_z``, at every node j."""
    n_nodes = grid.shape[1]
    half = min(n_nodes - 1, int(np.ceil(KERNEL_HALF_WIDTH_Z / step_z)))
    z = np.arange(-half, half + 1) * step_z
    kernel = slope * np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))) ** 2
    # A circular convolution of length >= n_nodes + half - 1 leaves the outputs at nodes
    # 0..n_nodes-1 (full-convolution indices half..half+n_nodes-1) free of wrap-around.
    # numpy's FFT (scipy.fft costs ~1 s to import, more than the whole fit).
    size = _fft_size(n_nodes + half - 1)
    spectrum = np.fft.rfft(grid, n=size, axis=1)
    spectrum *= np.fft.rfft(kernel, n=size)
    full = np.fft.irfft(spectrum, n=size, axis=1)
    # Output index j + half is centred on node j.
    return np.maximum(full[:, half : half + n_nodes], 0.0)


def _grid(slope: float | None, grid_step_z: float) -> tuple[float, int]:
    """The grid's step in score units and its number of nodes (up to one step past 1)."""
    if slope is None:
        step = COUNT_GRID_STEP
    elif not slope > 0 or not grid_step_z > 0:
        raise CalibrationError(f"slope and grid step must be > 0, got slope={slope}, grid_step_z={grid_step_z}")
    else:
        step = grid_step_z / slope
    # Nodes up to one step past 1: every score in [0, 1] lies below the last edge.
    n_nodes = int(np.ceil(1.0 / step)) + 2
    if n_nodes > MAX_GRID:
        raise CalibrationError(
            f"slope {slope} needs a grid of {n_nodes} nodes (max {MAX_GRID}): "
            "use a smaller slope, a larger grid_step_z, or engine='autograd'"
        )
    return step, n_nodes


def _index_positives(scores: np.ndarray, labels: np.ndarray, table: np.ndarray, below: np.ndarray,
                     kernel: np.ndarray | None, *, edges: np.ndarray, step: float, slope: float | None) -> np.ndarray:
    """Fill the positives' part of the index; return the positives per class.

    ``table`` receives each class's positive scores ascending, then ``WINDOW`` pads; ``below``
    (C, n_nodes) how many of them lie below each grid edge; ``kernel`` (C, n_nodes) their kernel
    sums. The positives (a few per clip) are read in the scores' own layout, then sorted class-major.
    """
    n_classes, n_nodes = below.shape
    flat = np.flatnonzero(labels)
    column = flat % n_classes
    local = scores.reshape(-1)[flat] if scores.flags.c_contiguous else scores[flat // n_classes, column]
    keys = np.sort(_keys(local, column))
    column = keys >> 32
    local = (keys & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
    table[:] = _PAD
    table[np.arange(local.size) + WINDOW * column] = local
    # Positives below edge j: those whose bin (edges at or below the score) is below j.
    bins = np.searchsorted(edges, local, side="right")
    # By blocks of classes: for all classes at once, the counts' and kernels' temporaries took ~50 KB a class.
    for first in range(0, n_classes, BLOCK_CLASSES):
        last = min(first + BLOCK_CLASSES, n_classes)
        lo, hi = np.searchsorted(column, [first, last])
        counts = np.bincount((column[lo:hi] - first) * (n_nodes + 1) + bins[lo:hi], minlength=(last - first) * (n_nodes + 1))
        below[first:last] = np.cumsum(counts.reshape(last - first, n_nodes + 1), axis=1)[:, :n_nodes]
        if kernel is not None:
            grid = _bin_scores(local[lo:hi], column[lo:hi] - first, n_classes=last - first, step=step, n_nodes=n_nodes)
            kernel[first:last] = _convolve_kernel(grid, step_z=step * slope, slope=slope)
    return np.bincount(column, minlength=n_classes)


def _index_classes(scores: np.ndarray, part: np.ndarray, below: np.ndarray, kernel: np.ndarray | None, *,
                   n_clips: int, edges: np.ndarray, step: float, slope: float | None) -> None:
    """Fill the rows of a block of classes (the columns of ``scores``): sorted and padded scores, bin counts, kernel sums."""
    part[:, :n_clips] = scores.T
    part[:, n_clips:] = _PAD
    part.sort(axis=1)
    below[:] = np.stack([row[:n_clips].searchsorted(edges) for row in part])
    if kernel is not None:
        grid = _bin_sorted_rows(part, below, n_clips=n_clips, step=step)
        kernel[:] = _convolve_kernel(grid, step_z=step * slope, slope=slope)


def _check_index_size(n_classes: int, *, n_clips: int, n_padded: int, n_nodes: int, n_pos: int,
                      slope: float | None) -> None:
    """Raise CalibrationError, before any allocation, if the index would take more than :data:`MAX_INDEX_BYTES`."""
    per_node = 2 * 4 + (2 * 8 if slope is not None else 0)
    needed = n_classes * (n_padded * 4 + n_nodes * per_node + WINDOW * 4) + n_pos * 4
    if needed > MAX_INDEX_BYTES:
        mib = 1 << 20
        fix = ("use a smaller slope (fewer grid nodes) or method 'exact'" if slope is not None
               else "fit fewer classes at once")
        raise CalibrationError(
            f"the sorted-score index of {n_classes} classes x {n_clips} clips ({n_nodes} grid nodes) needs "
            f"{needed / mib:.0f} MiB, more than the {MAX_INDEX_BYTES / mib:.0f} MiB calitag allows: {fix}"
        )


def _run(tasks: list[Callable[[], object]], workers: int) -> list[object]:
    """Every task's result, in order; on ``workers`` threads when more than one (numpy releases the GIL)."""
    if workers <= 1 or len(tasks) <= 2:
        return [task() for task in tasks]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [done.result() for done in [pool.submit(task) for task in tasks]]


class ScoreIndex:
    """Sorted per-class scores of one validation set on a grid, ready for many threshold queries.

    Built with :meth:`build`. Attributes
    ----------
    values : numpy.ndarray
        float32: ``rows`` flattened, then each class's positive scores ascending, each class
        followed by ``WINDOW`` padding values (1.5).
    rows : numpy.ndarray
        (C, n_padded) view of ``values``: each class's scores, ascending, then at least
        ``WINDOW`` padding values.
    starts : numpy.ndarray
        (C, 2) int64: where each class's scores and its positive scores start in ``values``.
    edges : numpy.ndarray
        (n_nodes,) float32 grid edges, edge j = ``j * grid_step``; bin j runs from edge j to edge j + 1.
    below : numpy.ndarray
        (C * n_nodes, 2) int32: per class and edge, how many of the class's scores (column 0)
        and of its positive scores (column 1) lie below the edge.
    n_pos : numpy.ndarray
        (C,) float64 positives per class.
    n_clips : int
    kernel : numpy.ndarray or None
        (2, C * n_nodes) float64 kernel sums at the nodes (class-major): [0] over positives,
        [1] over all scores.
    grid_step : float
        Node spacing in score units.
    slope : float
        Surrogate slope of the kernel (0.0 for an index built without one).
    """

    def __init__(self, *, values: np.ndarray, n_classes: int, n_padded: int, starts: np.ndarray, edges: np.ndarray,
                 below: np.ndarray, n_pos: np.ndarray, n_clips: int, kernel: np.ndarray | None, grid_step: float,
                 slope: float) -> None:
        self.values = values
        self.rows = values[: n_classes * n_padded].reshape(n_classes, n_padded)
        self.starts = starts
        self.edges = edges
        self.below = below
        self.n_pos = n_pos
        self.n_clips = n_clips
        self.kernel = kernel
        self.grid_step = grid_step
        self.slope = slope

    @classmethod
    def build(cls, scores: np.ndarray, labels: np.ndarray, *, slope: float | None = 50.0, grid_step_z: float = 0.02,
              workers: int | None = None) -> ScoreIndex:
        """Sort the scores per class, count them per grid bin and, when ``slope`` is given, tabulate the kernel sums.

        Parameters
        ----------
        scores : numpy.ndarray
            (N, C) scores in [0, 1] (validated by the caller); compared in float32.
        labels : numpy.ndarray
            (N, C) bool.
        slope : float or None
            Surrogate slope ``a``; None builds the counting part only (on a grid of step 1/1024).
        grid_step_z : float
            Grid step in units of ``1/slope`` (0.02 gives relative errors near 1e-5).
        workers : int, optional
            Threads that sort and tabulate blocks of classes at once (numpy releases the GIL in
            that work); 1 or less runs in the calling thread. Default: the usable CPUs (at most 4)
            for a matrix of a million scores or more, else 1. The result does not depend on it.

        Returns
        -------
        ScoreIndex
        """
        n_clips, n_classes = scores.shape
        step, n_nodes = _grid(slope, grid_step_z)
        edges = (np.arange(n_nodes) * step).astype(np.float32)
        labels = np.asarray(labels, dtype=bool)
        # One row per class, always a new array (the caller's scores are never reordered),
        # padded so that a window of WINDOW values from any rank stays inside the row.
        n_padded = -(-(n_clips + WINDOW) // WINDOW) * WINDOW
        n_rows = n_classes * n_padded
        _check_index_size(n_classes, n_clips=n_clips, n_padded=n_padded, n_nodes=n_nodes, n_pos=int(np.count_nonzero(labels)),
                          slope=slope)
        values = np.empty(n_rows + int(np.count_nonzero(labels)) + n_classes * WINDOW, dtype=np.float32)
        rows = values[:n_rows].reshape(n_classes, n_padded)
        below = np.empty((n_classes, n_nodes, 2), dtype=np.int32)
        kernel = np.empty((2, n_classes, n_nodes)) if slope is not None else None
        grid = {"edges": edges, "step": step, "slope": slope}
        if workers is None:
            workers = min(usable_cpus(), 4) if n_clips * n_classes >= 1 << 20 else 1
        chunk = max(1, min(CHUNK_CLASSES, -(-n_classes // max(1, workers))))
        # The positives (a few per clip) are one more task beside the blocks of classes.
        tasks = [partial(_index_positives, scores, labels, values[n_rows:], below[:, :, 1],
                         None if kernel is None else kernel[0], **grid)]
        for first in range(0, n_classes, chunk):
            block = slice(first, min(first + chunk, n_classes))
            tasks.append(partial(_index_classes, scores[:, block], rows[block], below[block, :, 0],
                                 None if kernel is None else kernel[1, block], n_clips=n_clips, **grid))
        n_pos = _run(tasks, workers)[0]
        starts = np.empty((n_classes, 2), dtype=np.int64)
        starts[:, 0] = np.arange(n_classes) * n_padded
        starts[:, 1] = n_rows + np.cumsum(n_pos) - n_pos + WINDOW * np.arange(n_classes)
        return cls(values=values, n_classes=n_classes, n_padded=n_padded, starts=starts, edges=edges,
                   below=below.reshape(-1, 2), n_pos=n_pos.astype(np.float64), n_clips=n_clips,
                   kernel=None if kernel is None else kernel.reshape(2, -1), grid_step=step, slope=float(slope or 0.0))

    @property
    def n_classes(self) -> int:
        return self.n_pos.size

    def _query(self, thresholds: np.ndarray, *, exact: bool) -> np.ndarray:
        """float32 values to compare the float32 scores with, one per class.

        ``exact=False`` rounds each threshold to the nearest float32 (the SGL parameter's own
        precision); ``exact=True`` takes the largest float32 at or below it, so that ``score >
        query`` holds exactly when ``score > threshold`` does. Clipped into [-0.25, 1], where the
        counts no longer change.
        """
        values = np.asarray(thresholds, dtype=np.float64)
        query = values.astype(np.float32)
        if exact:
            query = np.where(query > values, np.nextafter(query, np.float32(-np.inf)), query)
        return np.clip(query, np.float32(-0.25), np.float32(1.0)).astype(np.float32)

    def _counter(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function of (C,) float32 queries giving (C, 2) counts: per class, its scores and positive scores at or below.

        Each query's node is the last grid edge at or below it, so every score counted in
        ``below`` is too; the scores from there on are compared with the query ``WINDOW`` at a
        time, and the rare classes with more than that at or below it (a crowded bin) are
        finished by a binary search.
        """
        n_nodes = self.edges.size
        node_base = np.arange(self.n_classes, dtype=np.int64) * n_nodes
        scale = np.float32(1.0 / self.grid_step)
        edges, below, values, starts = self.edges, self.below, self.values, self.starts
        ends = starts + np.stack([np.full(self.n_classes, self.n_clips), self.n_pos.astype(np.int64)], axis=1)
        # (WINDOW, 1) so that the window's gathers run along the long axis (scores, positives of each class).
        offsets = np.arange(WINDOW, dtype=np.int64)[:, None]
        flat_starts, flat_ends = starts.reshape(-1), ends.reshape(-1)

        def count(query: np.ndarray) -> np.ndarray:
            node = (query * scale).astype(np.int64)
            np.minimum(node, n_nodes - 1, out=node)
            np.maximum(node, 0, out=node)
            # float32 rounding may put the product one node too high: step back there.
            node -= np.take(edges, node) > query
            np.maximum(node, 0, out=node)  # a negative query: nothing lies below it
            node += node_base
            first = np.take(below, node, axis=0) + starts  # (C, 2) first index at or past the node's edge
            first = first.reshape(-1)  # class-major: scores, positives, scores, ...
            paired = np.repeat(query, 2)
            window = np.take(values, offsets + first) <= paired  # (WINDOW, 2 C)
            within = np.add.reduce(window, axis=0, dtype=np.int64)
            full = within == WINDOW
            if full.any():
                within[full] = _search_past_window(values, paired, first, flat_ends, full)
            within += first
            within -= flat_starts
            return within.reshape(-1, 2)

        return count

    def _at_or_below(self, query: np.ndarray) -> np.ndarray:
        """(C, 2) int64: per class, how many of its scores and of its positive scores are <= ``query`` (float32)."""
        return self._counter()(query)

    def counts(self, thresholds: np.ndarray, *, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``(tp, pp)`` per class (float64, shape (C,)) of the decisions ``score > threshold``.

        Thresholds are rounded to float32 first, as the scores were; with ``exact=True`` each
        float32 score is compared with the threshold itself (as ``scores > thresholds`` does in
        numpy).
        """
        at_or_below = self._at_or_below(self._query(thresholds, exact=exact))
        return self.n_pos - at_or_below[:, 1], (self.n_clips - at_or_below[:, 0]).astype(np.float64)

    def kernel_sums(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(Kpos, Kall)`` per class (float64, shape (C,)) at thresholds in [0, 1], interpolated."""
        if self.kernel is None:
            raise CalibrationError("this ScoreIndex was built without a slope: it has no kernel grid")
        position = np.asarray(thresholds, dtype=np.float64) / self.grid_step
        n_nodes = self.edges.size
        node = np.clip(np.floor(position), 0, n_nodes - 2).astype(np.int64)
        index = np.arange(self.n_classes) * n_nodes + node
        left, right = self.kernel[:, index], self.kernel[:, index + 1]
        value = left + (position - node) * (right - left)
        return value[0], value[1]

    def epoch_reader(self) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """A function of (C,) float32 thresholds in [0, 1] giving ``(tp, pp, Kpos, Kall)`` per class.

        The same values as :meth:`counts` and :meth:`kernel_sums`, with everything that does not
        depend on the thresholds computed once: an SGL epoch is a few dozen small array
        operations.
        """
        if self.kernel is None:
            raise CalibrationError("this ScoreIndex was built without a slope: it has no kernel grid")
        count = self._counter()
        n_clips, n_pos, kernel, step = float(self.n_clips), self.n_pos, self.kernel, self.grid_step
        n_nodes = self.edges.size
        node_base = np.arange(self.n_classes, dtype=np.int64) * n_nodes

        # np.take rather than fancy indexing: the same gathers, faster on small index arrays.
        def read(thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            at_or_below = count(thresholds)
            position = thresholds.astype(np.float64) / step
            node = np.minimum(position.astype(np.int64), n_nodes - 2)
            index = node_base + node
            left = np.take(kernel, index, axis=1)
            value = left + (position - node) * (np.take(kernel, index + 1, axis=1) - left)
            return n_pos - at_or_below[:, 1], n_clips - at_or_below[:, 0], value[0], value[1]

        return read

    def _neighbours(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per class: the number of scores at or below ``thresholds`` (compared in float32), the
        largest such score (or -inf) and the smallest score above (or +inf)."""
        below = self._at_or_below(self._query(thresholds, exact=False))[:, 0]
        flat = self.rows.reshape(-1)
        start = self.starts[:, 0]
        # rows[c, below] is the padding when every score is at or below: masked to +inf.
        low = np.where(below > 0, flat[start + np.maximum(below - 1, 0)], -np.inf)
        high = np.where(below < self.n_clips, flat[start + below], np.inf)
        return below, low.astype(np.float64), high.astype(np.float64)

    def near_a_score(self, thresholds: np.ndarray, *, tolerance: float = 1e-6) -> np.ndarray:
        """(C,) bool: the threshold lies within ``tolerance`` of one of its class's fitting scores."""
        _, low, high = self._neighbours(thresholds)
        values = np.asarray(thresholds, dtype=np.float64)
        return (values - low <= tolerance) | (high - values <= tolerance)

    def snap(self, thresholds: np.ndarray) -> np.ndarray:
        """Move each threshold to the middle of the gap between the fitting scores around it.

        The decisions ``score > threshold`` on the fitting scores do not change, but the
        threshold no longer sits within float rounding of a score level (with tied or quantised
        scores a threshold just below a level would flip every clip at that level). Below the
        lowest score the threshold becomes 0 ("every clip with a positive score"); above the
        highest it is the middle of (highest, 1), so saturated scores of exactly 1 still count.

        Parameters
        ----------
        thresholds : numpy.ndarray
            (C,) values in [0, 1].

        Returns
        -------
        numpy.ndarray
            (C,) float64 midpoints.
        """
        _, low, high = self._neighbours(thresholds)
        high = np.where(np.isfinite(high), high, 1.0)
        middle = np.where(np.isfinite(low), (low + high) / 2.0, 0.0)
        low = np.where(np.isfinite(low), low, 0.0)
        # A score of exactly 0 (or 1) leaves no room below (above) it; keep such a threshold.
        keep = high <= low
        return np.where(keep, np.asarray(thresholds, dtype=np.float64), middle)

    def label_rate_thresholds(self, *, low: float = 0.01, high: float = 0.99) -> np.ndarray:
        """Per class, the threshold that predicts as many clips as the class has positives.

        The midpoint between the ``n_pos``-th and ``(n_pos + 1)``-th highest score, clipped into
        ``[low, high]`` (a class with no positive gets ``high``, one that is positive everywhere
        ``low``). This is the data-derived start of the solvers when no ``init`` is given.

        Returns
        -------
        numpy.ndarray
            (C,) float64.
        """
        k = self.n_pos.astype(np.int64)
        flat = self.rows.reshape(-1)
        start = self.starts[:, 0]
        above = np.where(k > 0, flat[start + np.clip(self.n_clips - k, 0, self.n_clips - 1)], np.inf)
        below = np.where(k < self.n_clips, flat[start + np.clip(self.n_clips - k - 1, 0, self.n_clips - 1)], -np.inf)
        middle = (above.astype(np.float64) + below) / 2.0
        middle = np.where(k == 0, high, np.where(k >= self.n_clips, low, middle))
        return np.clip(middle, low, high)


def _search_past_window(values: np.ndarray, query: np.ndarray, first: np.ndarray, stop: np.ndarray,
                        full: np.ndarray) -> np.ndarray:
    """For the ranges marked ``full``: how many of ``values[first:stop]`` are <= their ``query``.

    Each range ascends and its first ``WINDOW`` values are known to be at or below the query.
    A few ranges (the usual case) are searched one by one; many at once by one binary search
    over all of them.
    """
    rows = np.flatnonzero(full)
    if rows.size <= _FEW_SEARCHES:
        return np.array([WINDOW + values[first[r] + WINDOW : stop[r]].searchsorted(query[r], side="right")
                         for r in rows], dtype=np.int64)
    target = query[rows]
    low = first[rows] + WINDOW
    high = stop[rows]
    while True:
        open_ = low < high
        if not open_.any():
            break
        middle = (low + high) >> 1
        at_or_below = open_ & (values[np.where(open_, middle, 0)] <= target)
        low = np.where(at_or_below, middle + 1, low)
        high = np.where(open_ & ~at_or_below, middle, high)
    return low - first[rows]
