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
costs two binary searches and two gathers per class instead of four passes over ``N x C`` scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calitag.errors import CalibrationError

#: Kernel half-width in units of 1/slope; sigmoid'(40) ~ 4e-18, below float64 resolution of any sum.
KERNEL_HALF_WIDTH_Z = 40.0
#: Largest grid allowed, to bound memory (2 * n_classes * MAX_GRID float64 values).
MAX_GRID = 1 << 16
# Class c's scores (all in [0, 1]) are stored as score + ROW_GAP * c in one sorted float64 array,
# so a single binary search answers one query per class. float64 holds these sums exactly.
ROW_GAP = 2.0


def _linear_binning(keys: np.ndarray, local: np.ndarray, *, n_classes: int, step: float, n_nodes: int) -> np.ndarray:
    """Linear-binning weights of each class's scores on nodes ``0, step, 2 step, ...``.

    ``keys`` is the flat sorted array of ``score + ROW_GAP * class`` and ``local`` the same
    scores without the class offset. Returns (n_classes, n_nodes) float64: each score at position
    ``p = score / step`` gives ``1 - frac(p)`` to node ``floor(p)`` and ``frac(p)`` to the next,
    so the kernel sums built from it are second-order accurate in the step.
    """
    offsets = (ROW_GAP * np.arange(n_classes))[:, None]
    edges = np.arange(n_nodes + 1)[None, :] * step + offsets
    bounds = np.searchsorted(keys, edges.ravel()).reshape(n_classes, n_nodes + 1)
    count = np.diff(bounds, axis=1).astype(np.float64)
    # Every score lies below the last edge, so bin j of class c ends where bin j + 1 (or class
    # c + 1) starts: one reduceat sums every bin. It returns a[start] for an empty bin: masked.
    starts = np.minimum(bounds[:, :-1].ravel(), max(keys.size - 1, 0))
    sums = np.add.reduceat(local.ravel(), starts, dtype=np.float64).reshape(n_classes, n_nodes) if keys.size else count
    sums = np.where(count > 0, sums, 0.0)
    # Sum over each bin's members of (position - bin index): the weight they pass to node b + 1.
    upper = sums / step - np.arange(n_nodes)[None, :] * count
    grid = count - upper
    grid[:, 1:] += upper[:, :-1]
    return grid


def _convolve_kernel(grid: np.ndarray, *, step_z: float, slope: float) -> np.ndarray:
    """Kernel sums ``sum_b grid[b] * a * sig(z) * sig(-z)``, ``z = (b - j) * step_z``, at every node j."""
    n_nodes = grid.shape[1]
    half = min(n_nodes - 1, int(np.ceil(KERNEL_HALF_WIDTH_Z / step_z)))
    z = np.arange(-half, half + 1) * step_z
    kernel = slope * np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))) ** 2
    # numpy's FFT (scipy.fft costs ~1 s to import, more than the whole fit).
    size = 1 << int(np.ceil(np.log2(n_nodes + 2 * half)))
    spectrum = np.fft.rfft(grid, n=size, axis=1) * np.fft.rfft(kernel, n=size)
    full = np.fft.irfft(spectrum, n=size, axis=1)
    # Full linear convolution: output index j + half is centred on node j.
    return np.maximum(full[:, half : half + n_nodes], 0.0)


@dataclass(frozen=True)
class ScoreIndex:
    """Sorted per-class scores of one validation set, ready for many threshold queries.

    Attributes
    ----------
    keys_all : numpy.ndarray
        (C * N,) float64, ``score + ROW_GAP * class`` sorted: class-major, ascending scores.
    keys_pos : numpy.ndarray
        (total positives,) float64, the same for positive examples only.
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

    keys_all: np.ndarray
    keys_pos: np.ndarray
    pos_starts: np.ndarray
    n_pos: np.ndarray
    n_clips: int
    kernel: np.ndarray | None
    grid_step: float
    slope: float

    @classmethod
    def build(cls, scores: np.ndarray, labels: np.ndarray, *, slope: float | None = 50.0, grid_step_z: float = 0.02) -> ScoreIndex:
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

        Returns
        -------
        ScoreIndex
        """
        n_clips, n_classes = scores.shape
        offsets = ROW_GAP * np.arange(n_classes)
        # A copy, always: with one class (or one clip) scores.T is already contiguous, and an
        # in-place sort of a view would reorder the caller's scores.
        sorted_all = np.array(scores.T, dtype=np.float32, order="C", copy=True)
        sorted_all.sort(axis=1)
        keys_all = (sorted_all + offsets[:, None]).ravel()  # float64: exact sums
        # Positives read in the scores' own layout (a few per clip), then sorted class-major.
        clip, column = np.nonzero(labels)
        keys_pos = np.sort(np.asarray(scores[clip, column], dtype=np.float32) + offsets[column])
        n_pos = np.bincount(column, minlength=n_classes)
        pos_starts = np.concatenate([[0], np.cumsum(n_pos)[:-1]]).astype(np.int64)
        kernel = None
        step = float("nan")
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
            grids = np.empty((2 * n_classes, n_nodes))
            local_pos = keys_pos - ROW_GAP * np.repeat(np.arange(n_classes), n_pos)
            grids[:n_classes] = _linear_binning(keys_pos, local_pos, n_classes=n_classes, step=step, n_nodes=n_nodes)
            grids[n_classes:] = _linear_binning(keys_all, sorted_all, n_classes=n_classes, step=step, n_nodes=n_nodes)
            kernel = _convolve_kernel(grids, step_z=grid_step_z, slope=slope).reshape(2, n_classes, n_nodes)
        return cls(keys_all, keys_pos, pos_starts, n_pos.astype(np.float64), n_clips, kernel, step, float(slope or 0.0))

    @property
    def n_classes(self) -> int:
        return self.n_pos.size

    def counts(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``(tp, pp)`` per class (float64, shape (C,)) of the decisions ``score > threshold``.

        Thresholds are rounded to float32 first, as the scores were.
        """
        query = np.asarray(thresholds, dtype=np.float32).astype(np.float64) + ROW_GAP * np.arange(self.n_classes)
        at_or_below = np.searchsorted(self.keys_all, query, side="right") - np.arange(self.n_classes) * self.n_clips
        pos_at_or_below = np.searchsorted(self.keys_pos, query, side="right") - self.pos_starts
        return self.n_pos - pos_at_or_below, (self.n_clips - at_or_below).astype(np.float64)

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

    def _neighbours(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per class: the number of scores at or below ``thresholds`` (compared in float32), the
        largest such score (or -inf) and the smallest score above (or +inf)."""
        rows = np.arange(self.n_classes)
        query = np.asarray(thresholds, dtype=np.float32).astype(np.float64) + ROW_GAP * rows
        position = np.searchsorted(self.keys_all, query, side="right")
        start = rows * self.n_clips
        below = position - start
        last = self.keys_all.size - 1
        low = np.where(below > 0, self.keys_all[np.clip(position - 1, 0, last)] - ROW_GAP * rows, -np.inf)
        high = np.where(below < self.n_clips, self.keys_all[np.clip(position, 0, last)] - ROW_GAP * rows, np.inf)
        return below, low, high

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
        rows = np.arange(self.n_classes)
        k = self.n_pos.astype(np.int64)
        start = rows * self.n_clips
        above = np.where(k > 0, self.keys_all[start + np.clip(self.n_clips - k, 0, self.n_clips - 1)], np.inf)
        below = np.where(k < self.n_clips, self.keys_all[start + np.clip(self.n_clips - k - 1, 0, self.n_clips - 1)], -np.inf)
        middle = (above + below) / 2.0 - ROW_GAP * rows
        middle = np.where(k == 0, high, np.where(k >= self.n_clips, low, middle))
        return np.clip(middle, low, high)
