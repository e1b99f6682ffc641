"""Per-class sorted scores: exact decision counts and surrogate-gradient sums in O(C) per step.

The SGL-Thresh gradient of any count-based objective ``F(tp, pp)`` with respect to the
threshold ``t_c`` of class ``c`` is

    dF/dt_c = -(dF/dtp_c * Kpos_c(t_c) + dF/dpp_c * Kall_c(t_c)),
    K_c(t)  = sum_i a * sigmoid(a (s_ic - t)) * sigmoid(-a (s_ic - t))

over the class's positive scores (Kpos) or all its scores (Kall). The counts ``tp_c`` and
``pp_c`` of ``s > t`` come exactly from the sorted scores by binary search. ``K_c(t)`` is a
logistic-kernel density of the scores, a smooth function of ``t`` with a length scale of
``1/a``: it is computed once for every class on a grid of step ``grid_step / a`` (linear binning
of the scores, then an FFT convolution with the kernel) and read off by linear interpolation.
Both errors are of order ``grid_step**2``, far below what moves an Adam step, so one SGL epoch
costs a few binary searches and gathers per class instead of four passes over ``N x C`` scores.

Building the index costs one transposed copy and one sort of the scores (float32, one row per
class) plus the grid; counting all scores below a threshold searches a table of every
``BLOCK``-th score (one search for all classes, see :func:`_keys`) and then the one block of
``BLOCK`` scores that holds the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from calitag._host import usable_cpus
from calitag.errors import CalibrationError

#: Kernel half-width in units of 1/slope; sigmoid'(40) ~ 4e-18, below float64 resolution of any sum.
KERNEL_HALF_WIDTH_Z = 40.0
#: Largest grid allowed, to bound memory (2 * n_classes * MAX_GRID float64 values).
MAX_GRID = 1 << 16
#: Classes sorted and tabulated together (a block of rows that stays in cache).
CHUNK_CLASSES = 32
#: Scores per block of the two-level count search (the block table holds every BLOCK-th score).
#: Eight, so that one block's comparisons (eight bytes of 0/1) are summed as one uint64.
BLOCK = 8
# x * _BYTE_SUM has the sum of x's eight bytes in its top byte (no carries: each byte is 0 or 1).
_BYTE_SUM = np.uint64(0x0101010101010101)
# Rows are padded to whole blocks with this value, above every score and threshold.
_PAD = np.float32(1.5)


def _keys(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Sort keys ``class * 2**32 + bits(value)`` (int64) of float32 values in [0, 1.5].

    The bit pattern of a non-negative float32 orders like its value, so keys of one class
    order like its scores and all keys order class-major: one binary search over the keys of
    every class answers one query per class, exactly (a float64 ``score + 2 * class`` would
    round scores below ~1e-13 to 0). -0.0 counts as 0.0; a negative query gets a key below
    every key of its class.
    """
    values = np.asarray(values, dtype=np.float32) + np.float32(0.0)  # -0.0 + 0.0 == +0.0
    shifted = np.asarray(classes, dtype=np.int64) << 32
    keys = values.view(np.int32).astype(np.int64) + shifted
    if (values < 0).any():
        keys = np.where(values < 0, shifted - 1, keys)
    return keys


def _bin_sorted_rows(rows: np.ndarray, *, step: float, n_nodes: int) -> np.ndarray:
    """Linear-binning weights of each row of ascending scores on nodes ``0, step, 2 step, ...``.

    ``rows`` is (n_classes, n_clips) float32, each row sorted, all values below
    ``(n_nodes - 1) * step``. Returns (n_classes, n_nodes) float64: each score at position ``p =
    score / step`` gives ``1 - frac(p)`` to node ``floor(p)`` and ``frac(p)`` to the next, so the
    kernel sums built from it are second-order accurate in the step. One row at a time: its bin
    edges by binary search and the sums of its non-empty bins by one ``reduceat`` stay in cache,
    which beats an ``O(n)`` scatter (``np.bincount``) over the whole matrix.
    """
    n_classes = rows.shape[0]
    edges = (np.arange(n_nodes + 1) * step).astype(rows.dtype)
    nodes = np.arange(n_nodes, dtype=np.float64)
    grid = np.zeros((n_classes, n_nodes + 1))
    for c in range(n_classes):
        row = rows[c]
        bounds = row.searchsorted(edges)
        count = bounds[1:] - bounds[:-1]
        filled = count.nonzero()[0]
        if filled.size == 0:
            continue
        # Bins that hold scores, in ascending order: each one's sum runs up to the next one's start.
        sums = np.add.reduceat(row, bounds[filled], dtype=np.float64)
        # Sum over each bin's members of (position - bin index): the weight they pass to node b + 1.
        in_bin = count[filled]
        upper = sums / step - nodes[filled] * in_bin
        weights = grid[c]
        weights[filled] = in_bin - upper
        weights[filled + 1] += upper
    return grid[:, :n_nodes]


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


@dataclass(frozen=True)
class ScoreIndex:
    """Sorted per-class scores of one validation set, ready for many threshold queries.

    Attributes
    ----------
    rows : numpy.ndarray
        (C, n_padded) float32: each class's scores, ascending, then padding (1.5) up to a whole
        number of blocks (at least one padding value per row).
    block_keys : numpy.ndarray
        (C * n_padded / BLOCK,) int64 keys (:func:`_keys`) of the last score of every block,
        ascending over the whole array.
    keys_pos : numpy.ndarray
        (total positives,) int64 keys of the positive examples' scores, sorted.
    pos_starts : numpy.ndarray
        (C,) int64 index in ``keys_pos`` where each class starts.
    n_pos : numpy.ndarray
        (C,) float64 positives per class.
    n_clips : int
    kernel : numpy.ndarray or None
        (2, C, n_nodes) float64 kernel sums on the grid: [0] over positives, [1] over all scores.
    grid_step : float
        Node spacing in score units.
    slope : float
    """

    rows: np.ndarray
    block_keys: np.ndarray
    keys_pos: np.ndarray
    pos_starts: np.ndarray
    n_pos: np.ndarray
    n_clips: int
    kernel: np.ndarray | None
    grid_step: float
    slope: float

    @classmethod
    def build(cls, scores: np.ndarray, labels: np.ndarray, *, slope: float | None = 50.0, grid_step_z: float = 0.02,
              workers: int | None = None) -> ScoreIndex:
        """Sort the scores per class and, when ``slope`` is given, tabulate the kernel sums.

        Parameters
        ----------
        scores : numpy.ndarray
            (N, C) scores in [0, 1] (validated by the caller); compared in float32.
        labels : numpy.ndarray
            (N, C) bool.
        slope : float or None
            Surrogate slope ``a``; None builds the counting part only.
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
        classes = np.arange(n_classes)
        step = float("nan")
        n_nodes = 0
        if slope is not None:
            if not slope > 0 or not grid_step_z > 0:
                raise CalibrationError(f"slope and grid step must be > 0, got slope={slope}, grid_step_z={grid_step_z}")
            step = grid_step_z / slope
            n_nodes = int(np.ceil(1.0 / step)) + 2
            if n_nodes > MAX_GRID:
                raise CalibrationError(
                    f"slope {slope} needs a grid of {n_nodes} nodes (max {MAX_GRID}): "
                    "use a smaller slope, a larger grid_step_z, or engine='autograd'"
                )
        # One row per class, always a new array (the caller's scores are never reordered),
        # padded to whole blocks.
        n_padded = (n_clips // BLOCK + 1) * BLOCK
        rows = np.empty((n_classes, n_padded), dtype=np.float32)
        block_keys = np.empty((n_classes, n_padded // BLOCK), dtype=np.int64)
        kernel = np.empty((2, n_classes, n_nodes)) if slope is not None else None
        positives: dict[str, np.ndarray] = {}

        def read_positives() -> None:
            # Positives read in the scores' own layout (a few per clip), then sorted class-major.
            flat = np.flatnonzero(np.asarray(labels, dtype=bool))
            column = flat % n_classes
            values = scores.reshape(-1)[flat] if scores.flags.c_contiguous else scores[flat // n_classes, column]
            local_pos = np.asarray(values, dtype=np.float32)
            positives["keys"] = np.sort(_keys(local_pos, column))
            positives["n_pos"] = np.bincount(column, minlength=n_classes)
            if kernel is not None:
                grid = _bin_scores(local_pos, column, n_classes=n_classes, step=step, n_nodes=n_nodes)
                kernel[0] = _convolve_kernel(grid, step_z=grid_step_z, slope=slope)

        def tabulate(first: int, stop: int) -> None:
            # One block of classes from the transposed copy to its block keys and kernel sums, in place.
            part = rows[first:stop]
            part[:, :n_clips] = scores[:, first:stop].T
            part[:, n_clips:] = _PAD
            part.sort(axis=1)
            block_keys[first:stop] = _keys(part[:, BLOCK - 1 :: BLOCK], classes[first:stop, None])
            if kernel is not None:
                grid = _bin_sorted_rows(part[:, :n_clips], step=step, n_nodes=n_nodes)
                kernel[1, first:stop] = _convolve_kernel(grid, step_z=grid_step_z, slope=slope)

        if workers is None:
            workers = min(usable_cpus(), 4) if n_clips * n_classes >= 1 << 20 else 1
        chunk = max(1, min(CHUNK_CLASSES, -(-n_classes // max(1, workers))))
        # The positives (a few per clip) are one more task beside the blocks of classes.
        tasks = [read_positives] + [partial(tabulate, first, min(first + chunk, n_classes))
                                    for first in range(0, n_classes, chunk)]
        if workers > 1 and len(tasks) > 2:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                for done in [pool.submit(task) for task in tasks]:
                    done.result()
        else:
            for task in tasks:
                task()
        n_pos = positives["n_pos"]
        keys_pos = positives["keys"]
        pos_starts = np.concatenate([[0], np.cumsum(n_pos)[:-1]]).astype(np.int64)
        block_keys = block_keys.ravel()
        return cls(rows, block_keys, keys_pos, pos_starts, n_pos.astype(np.float64), n_clips, kernel, step,
                   float(slope or 0.0))

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

    def _ranks(self, query: np.ndarray) -> np.ndarray:
        """Per class, how many of its scores are <= ``query`` (float32)."""
        classes = np.arange(self.n_classes)
        n_blocks = self.rows.shape[1] // BLOCK
        # Whole blocks at or below the query; the next block (never past the padding) holds the rest.
        blocks = np.searchsorted(self.block_keys, _keys(query, classes), side="right") - classes * n_blocks
        block = self.rows.reshape(self.n_classes, n_blocks, BLOCK)[classes, blocks]
        return blocks * BLOCK + np.count_nonzero(block <= query[:, None], axis=1)

    def _pos_at_or_below(self, query: np.ndarray) -> np.ndarray:
        keys = _keys(query, np.arange(self.n_classes))
        return np.searchsorted(self.keys_pos, keys, side="right") - self.pos_starts

    def counts(self, thresholds: np.ndarray, *, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``(tp, pp)`` per class (float64, shape (C,)) of the decisions ``score > threshold``.

        Thresholds are rounded to float32 first, as the scores were; with ``exact=True`` each
        float32 score is compared with the threshold itself (as ``scores > thresholds`` does in
        numpy).
        """
        query = self._query(thresholds, exact=exact)
        at_or_below = self._ranks(query)
        return self.n_pos - self._pos_at_or_below(query), (self.n_clips - at_or_below).astype(np.float64)

    def kernel_sums(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(Kpos, Kall)`` per class (float64, shape (C,)) at thresholds in [0, 1], interpolated."""
        if self.kernel is None:
            raise CalibrationError("this ScoreIndex was built without a slope: it has no kernel grid")
        position = np.asarray(thresholds, dtype=np.float64) / self.grid_step
        n_nodes = self.kernel.shape[2]
        node = np.clip(np.floor(position), 0, n_nodes - 2).astype(np.int64)
        weight = position - node
        flat = self.kernel.reshape(2, -1)
        index = np.arange(self.n_classes) * n_nodes + node
        left, right = flat[:, index], flat[:, index + 1]
        value = left + weight * (right - left)
        return value[0], value[1]

    def epoch_reader(self) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """A function of (C,) float32 thresholds in [0, 1] giving ``(tp, pp, Kpos, Kall)`` per class.

        The same values as :meth:`counts` and :meth:`kernel_sums`, with everything that does not
        depend on the thresholds computed once: an SGL epoch is a few dozen small array
        operations.
        """
        if self.kernel is None:
            raise CalibrationError("this ScoreIndex was built without a slope: it has no kernel grid")
        n_classes, n_padded = self.rows.shape
        n_nodes = self.kernel.shape[2]
        classes = np.arange(n_classes)
        shifted = classes.astype(np.int64) << 32
        block_base = classes * (n_padded // BLOCK)
        blocks_flat = self.rows.reshape(-1, BLOCK)  # block k of the whole table is blocks_flat[k]
        node_base = classes * n_nodes
        kernel = self.kernel.reshape(2, -1)
        step = self.grid_step
        n_clips, n_pos, pos_starts, keys_pos, block_keys = float(self.n_clips), self.n_pos, self.pos_starts, self.keys_pos, self.block_keys
        top_byte = np.uint64(56)

        # np.take rather than fancy indexing: the same gathers, several times faster on small index arrays.
        def read(thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            keys = (thresholds + np.float32(0.0)).view(np.int32) + shifted  # _keys, for values in [0, 1]
            blocks = np.searchsorted(block_keys, keys, side="right")
            within = (np.take(blocks_flat, blocks, axis=0) <= thresholds[:, None]).view(np.uint64)[:, 0]
            pp = n_clips - ((blocks - block_base) * BLOCK + ((within * _BYTE_SUM) >> top_byte).astype(np.int64))
            tp = n_pos - (np.searchsorted(keys_pos, keys, side="right") - pos_starts)
            position = thresholds.astype(np.float64) / step
            node = np.minimum(position.astype(np.int64), n_nodes - 2)
            index = node_base + node
            left = np.take(kernel, index, axis=1)
            value = left + (position - node) * (np.take(kernel, index + 1, axis=1) - left)
            return tp, pp, value[0], value[1]

        return read

    def _neighbours(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per class: the number of scores at or below ``thresholds`` (compared in float32), the
        largest such score (or -inf) and the smallest score above (or +inf)."""
        below = self._ranks(self._query(thresholds, exact=False))
        flat = self.rows.reshape(-1)
        start = np.arange(self.n_classes) * self.rows.shape[1]
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
        start = np.arange(self.n_classes) * self.rows.shape[1]
        above = np.where(k > 0, flat[start + np.clip(self.n_clips - k, 0, self.n_clips - 1)], np.inf)
        below = np.where(k < self.n_clips, flat[start + np.clip(self.n_clips - k - 1, 0, self.n_clips - 1)], -np.inf)
        middle = (above.astype(np.float64) + below) / 2.0
        middle = np.where(k == 0, high, np.where(k >= self.n_clips, low, middle))
        return np.clip(middle, low, high)
