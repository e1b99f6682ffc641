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
import scipy.fft

from calitag.errors import CalibrationError

#: Kernel half-width in units of 1/slope; sigmoid'(40) ~ 4e-18, below float64 resolution of any sum.
KERNEL_HALF_WIDTH_Z = 40.0
#: Largest grid allowed, to bound memory (2 * n_classes * MAX_GRID float64 values).
MAX_GRID = 1 << 16
# Class c's scores (all in [0, 1]) are stored as score + ROW_GAP * c in one sorted float64 array,
# so a single binary search answers one query per class. float64 holds these sums exactly.
ROW_GAP = 2.0


def _running_sum(local: np.ndarray) -> np.ndarray:
    """``[0, x0, x0 + x1, ...]`` in float64 (``local`` must already be float64 for speed)."""
    prefix = np.zeros(local.size + 1)
    np.cumsum(local.ravel(), out=prefix[1:])
    return prefix


def _linear_binning(keys: np.ndarray, prefix: np.ndarray, *, step: float, n_nodes: int) -> np.ndarray:
    """Linear-binning weights of each class's scores on nodes ``0, step, 2 step, ...``.

    ``keys`` is the flat sorted array of ``score + ROW_GAP * class`` and ``prefix`` the running
    sum of the same scores without the class offset (:func:`_running_sum`). Returns (n_classes, n_nodes) float64: each score
    at position ``p = score / step`` gives ``1 - frac(p)`` to node ``floor(p)`` and ``frac(p)``
    to the next, so the kernel sums built from it are second-order accurate in the step.
    """
    n_classes = int(round(keys[-1] // ROW_GAP)) + 1 if keys.size else 0
    offsets = (ROW_GAP * np.arange(n_classes))[:, None]
    edges = np.arange(n_nodes + 1)[None, :] * step + offsets
    bounds = np.searchsorted(keys, edges.ravel()).reshape(n_classes, n_nodes + 1)
    count = np.diff(bounds, axis=1).astype(np.float64)
    # Sum over each bin's members of (position - bin index): the weight they pass to node b + 1.
    upper = np.diff(prefix[bounds], axis=1) / step - np.arange(n_nodes)[None, :] * count
    grid = count - upper
    grid[:, 1:] += upper[:, :-1]
    return grid


def _convolve_kernel(grid: np.ndarray, *, step_z: float, slope: float) -> np.ndarray:
    """Kernel sums ``sum_b grid[b] * a * sig(z) * sig(-z)``, ``z = (b - j) * step_z``, at every node j."""
    n_nodes = grid.shape[1]
    half = min(n_nodes - 1, int(np.ceil(KERNEL_HALF_WIDTH_Z / step_z)))
    z = np.arange(-half, half + 1) * step_z
    kernel = slope * np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))) ** 2
    size = scipy.fft.next_fast_len(n_nodes + 2 * half, real=True)
    spectrum = scipy.fft.rfft(grid, n=size, axis=1) * scipy.fft.rfft(kernel, n=size)
    full = scipy.fft.irfft(spectrum, n=size, axis=1)
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
        by_class = np.ascontiguousarray(scores.T, dtype=np.float32)
        offsets = ROW_GAP * np.arange(n_classes)
        keys_all = np.sort(by_class, axis=1).astype(np.float64)
        prefix_all = _running_sum(keys_all) if slope is not None else None
        keys_all += offsets[:, None]
        keys_all = keys_all.ravel()
        truth = np.ascontiguousarray(labels.T, dtype=bool)
        row, _ = np.nonzero(truth)
        order = np.lexsort((by_class[truth], row))
        local_pos = by_class[truth][order].astype(np.float64)
        keys_pos = local_pos + offsets[row[order]]
        n_pos = truth.sum(axis=1)
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
            grids = np.zeros((2 * n_classes, n_nodes))
            if keys_pos.size:
                n_rows = int(keys_pos[-1] // ROW_GAP) + 1
                grids[:n_rows] = _linear_binning(keys_pos, _running_sum(local_pos), step=step, n_nodes=n_nodes)
            grids[n_classes:] = _linear_binning(keys_all, prefix_all, step=step, n_nodes=n_nodes)
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
