"""The calibration report: one self-contained HTML page that shows where each threshold sits.

:func:`report` takes clip scores, their labels, the fitted thresholds and the default ones, and
returns the HTML text: a header (model, data, split, method, objective, date, version), a summary
(micro/macro-F1 default vs calibrated, with intervals and the paired gain when given), a sortable
per-class table, and per class with positive labels one figure of three panels (score histograms
of positives and negatives with both thresholds, F1/precision/recall against the threshold, the
precision-recall curve with average precision). Figures are PNG data URIs drawn with matplotlib's
Agg canvas, the table sorts with a few lines of inline JavaScript: the file opens from disk with
no network. Nothing here computes an interval: intervals and gains come from the caller (any
object with ``value``, ``low`` and ``high``).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from calitag._version import __version__
from calitag.errors import OutputError, ScoresError
from calitag.thresholds.io import DEFAULT_THRESHOLD, Thresholds
from calitag.thresholds.metrics import ClassificationReport, check_scores, check_targets, report_from_counts

#: Written into every report; a file that carries it may be replaced by a new report.
GENERATOR = "calitag report"
#: Bins of the score histograms over [0, 1].
N_BINS = 40
#: Thresholds at which the F1/precision/recall curves are evaluated (exact counts at each).
CURVE_POINTS = 401
#: Pixel size of a per-class figure (inches at FIGURE_DPI) and of the summary figure.
CLASS_FIGSIZE = (6.4, 2.3)  # 640 px: two per row on a 1366-px laptop screen
SUMMARY_FIGSIZE = (7.8, 2.6)
#: Up to this many classes, the summary shows one row per class; beyond, a scatter plot.
DUMBBELL_MAX = 30
FIGURE_DPI = 100
#: Colours (Okabe-Ito, readable with colour-vision deficiencies).
COLOR_NEG, COLOR_POS = "#9a9a9a", "#0072B2"
COLOR_DEFAULT, COLOR_FITTED = "#333333", "#D55E00"
COLOR_F1, COLOR_P, COLOR_R = "#009E73", "#0072B2", "#E69F00"
#: Header fields shown first, in this order, with their labels; other meta keys follow.
META_FIELDS = (
    ("model", "model"), ("data", "data"), ("labels", "labels"), ("n_clips", "clips"),
    ("split", "split / folds"), ("evaluated_on", "figures and table on"), ("method", "method"),
    ("objective", "objective"), ("date", "date"), ("calitag_version", "calitag version"),
)


# --- numbers --------------------------------------------------------------------------------


def _counts_report(decided: np.ndarray, truth: np.ndarray, thresholds: np.ndarray, names: Sequence[str]) -> ClassificationReport:
    """Exact per-class and micro/macro precision, recall, F1 of bool decisions (0 where undefined)."""
    return report_from_counts(np.count_nonzero(decided & truth, axis=0), np.count_nonzero(decided, axis=0),
                              np.count_nonzero(truth, axis=0), thresholds=thresholds, class_names=names,
                              n_clips=len(decided))


def _curves(scores: np.ndarray, truth: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall and F1 of ``scores > t`` for every t in ``grid`` (one class)."""
    ordered = np.sort(scores)
    positives = np.sort(scores[truth])
    pp = len(ordered) - np.searchsorted(ordered, grid, side="right")
    tp = len(positives) - np.searchsorted(positives, grid, side="right")
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pp > 0, tp / np.maximum(pp, 1), np.nan)
        recall = tp / max(len(positives), 1)
        f1 = 2 * tp / (pp + len(positives))
    return precision, recall, f1


def _interval(value: Any) -> tuple[float, float, float, float | None] | None:
    """(value, low, high, level) of an interval-like object or mapping, None when absent."""
    if value is None:
        return None
    get = value.get if isinstance(value, Mapping) else lambda key, default=None: getattr(value, key, default)
    try:
        point, low, high = float(get("value")), float(get("low")), float(get("high"))
    except (TypeError, ValueError) as err:
        raise ScoresError(f"an interval needs numeric value, low and high, got {value!r}") from err
    level = get("level", None)
    return point, low, high, float(level) if level is not None else None


def _gain(value: Any) -> tuple[tuple[float, float, float, float | None], str | None] | None:
    """The gain interval and the verdict of a paired-gain object (or of a bare interval)."""
    if value is None:
        return None
    inner = value.get("gain", value) if isinstance(value, Mapping) else getattr(value, "gain", value)
    verdict = getattr(value, "verdict", None)
    text = verdict() if callable(verdict) else (value.get("verdict") if isinstance(value, Mapping) else verdict)
    return _interval(inner), (str(text) if text else None)


_GUARD_TITLES = {"default": "the fit did not beat the default", "fallback": "the label-rate threshold beat the fit",
                 "target": "the threshold certified for the target"}


def _guard_badge(kept: str | None, reason: str) -> str:
    """The guard cell: the thresholds file's word for what was kept ("fit", "default", "fallback", "target")."""
    if kept is None:
        return "–"
    css = "badge default" if kept in ("default", "fallback") else "badge"
    return f"<span class='{css}' title='{_e(reason or _GUARD_TITLES.get(kept, ''))}'>{_e(kept)}</span>"


def _guard(value: Any) -> tuple[str | None, int | None, str]:
    """(kept: the thresholds file's word or None, positives seen, reason) from a per-class guard record."""
    if value is None:
        return None, None, ""
    get = value.get if isinstance(value, Mapping) else lambda key, default=None: getattr(value, key, default)
    kept = get("kept", None)
    if kept is None and get("fallback", None) is not None:
        kept = "default" if get("fallback") else "fit"
    positives = get("positives", None)
    if positives is None:
        positives = get("n_positives", None)
    return (str(kept) if kept is not None else None, int(positives) if positives is not None else None,
            str(get("reason", "") or ""))


# --- figures ----------------------------------------------------------------------------------


def _png_uri(rgba: np.ndarray) -> str:
    """An RGBA image as a PNG data URI, reduced to a 64-colour palette (a third of the RGB size)."""
    from PIL import Image

    # Fast octree: a fifth of the time of median cut at the same size (about 10 KB a class figure).
    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3])).quantize(colors=64, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_uri(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return _png_uri(np.asarray(canvas.buffer_rgba()))


def _style_axes(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=7.5, length=2, pad=1)
    ax.grid(alpha=0.25, linewidth=0.5)


class _ClassFigure:
    """The three panels of a class, drawn once; each class redraws only its own artists on the saved
    background (matplotlib blitting), since every axis spans [0, 1] for every class."""

    def __init__(self, grid: np.ndarray) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.grid = grid
        self.edges = np.linspace(0.0, 1.0, N_BINS + 1)
        fig = Figure(figsize=CLASS_FIGSIZE, dpi=FIGURE_DPI)
        self.canvas = FigureCanvasAgg(fig)
        hist, curve, pr = fig.subplots(1, 3, gridspec_kw={"wspace": 0.3, "left": 0.06, "right": 0.99,
                                                            "bottom": 0.19, "top": 0.85})
        zeros = np.zeros(N_BINS)
        self.stairs = []
        for color, alpha in ((COLOR_NEG, 0.45), (COLOR_POS, 0.55)):
            self.stairs.append((hist.stairs(zeros, self.edges, fill=True, color=color, alpha=alpha, linewidth=0),
                                hist.stairs(zeros, self.edges, color=color, linewidth=0.8)))
        hist.set(xlim=(0, 1), ylim=(0, 1.04))
        hist.set_xlabel("score", fontsize=7, labelpad=1)
        hist.set_ylabel("share of group", fontsize=7, labelpad=1)
        nan = np.full_like(grid, np.nan)
        self.curves = [curve.plot(grid, nan, color=color, linewidth=width)[0]
                       for color, width in ((COLOR_P, 0.9), (COLOR_R, 0.9), (COLOR_F1, 1.6))]
        curve.set(xlim=(0, 1), ylim=(-0.03, 1.03))
        curve.set_xlabel("threshold", fontsize=7, labelpad=1)
        self.vlines = [(ax.axvline(0.5, color=COLOR_DEFAULT, linestyle="--", linewidth=1.0),
                        ax.axvline(0.5, color=COLOR_FITTED, linewidth=1.4)) for ax in (hist, curve)]
        self.pr_line = pr.plot([], [], drawstyle="steps-post", color=COLOR_POS, linewidth=1.2)[0]
        self.points = (pr.plot([], [], marker="s", color=COLOR_DEFAULT, markerfacecolor="none", markersize=5,
                               linestyle="none")[0],
                       pr.plot([], [], marker="o", color=COLOR_FITTED, markersize=5, linestyle="none")[0])
        pr.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.05), xticks=np.linspace(0, 1, 6))
        pr.set_xlabel("recall", fontsize=7, labelpad=1)
        pr.set_ylabel("precision", fontsize=7, labelpad=1)
        self.titles = [ax.set_title(" ", fontsize=8) for ax in (hist, curve, pr)]
        self.name = fig.text(0.005, 0.995, " ", fontsize=9, fontweight="bold", ha="left", va="top")
        for ax in (hist, curve, pr):
            _style_axes(ax)
        self.dynamic = [a for pair in self.stairs for a in pair] + self.curves + [v for pair in self.vlines for v in pair] \
            + [self.pr_line, *self.points, *self.titles, self.name]
        for artist in self.dynamic:
            artist.set_animated(True)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(fig.bbox)
        self.figure = fig

    def render(self, name: str, scores: np.ndarray, truth: np.ndarray, default: float, fitted: float) -> tuple[str, float]:
        """One class's figure as a PNG data URI, and its average precision."""
        from sklearn.metrics import average_precision_score, precision_recall_curve

        # Shares of each group, so a handful of positives is visible beside thousands of negatives.
        for (fill, line), values in zip(self.stairs, (scores[~truth], scores[truth])):
            shares = np.histogram(values, bins=self.edges)[0] / max(values.size, 1)
            fill.set_data(shares, self.edges)
            line.set_data(shares, self.edges)
        n_pos, n_neg = int(truth.sum()), int((~truth).sum())
        self.titles[0].set_text(f"scores: {n_pos} positive{'s' * (n_pos != 1)}, {n_neg} negative{'s' * (n_neg != 1)}")
        for line, values in zip(self.curves, _curves(scores, truth, self.grid)):
            line.set_ydata(values)
        for default_line, fitted_line in self.vlines:
            default_line.set_xdata([default, default])
            fitted_line.set_xdata([fitted, fitted])
        f1_at = [_curves(scores, truth, np.array([t]))[2][0] for t in (default, fitted)]
        self.titles[1].set_text(f"F1 {f1_at[0]:.2f} at {default:.2f} \u2192 {f1_at[1]:.2f} at {fitted:.3f}")
        ap = float(average_precision_score(truth, scores))
        curve_p, curve_r, _ = precision_recall_curve(truth, scores)
        self.pr_line.set_data(curve_r, curve_p)
        for point, t in zip(self.points, (default, fitted)):
            p, r, _ = _curves(scores, truth, np.array([t]))
            point.set_data([r[0]], [0.0 if np.isnan(p[0]) else p[0]])
        self.titles[2].set_text(f"precision-recall, AP {ap:.2f}")
        self.name.set_text(name)
        self.canvas.restore_region(self.background)
        for artist in self.dynamic:
            self.figure.draw_artist(artist)
        return _png_uri(np.asarray(self.canvas.buffer_rgba())), ap


def _summary_figure(rows: Sequence[tuple[str, tuple | None, tuple | None]], names: Sequence[str],
                    f1_default: np.ndarray, f1_calibrated: np.ndarray) -> str:
    """Micro/macro-F1 default vs calibrated (with intervals) and per-class F1 before vs after."""
    from matplotlib.figure import Figure

    rows_right = len(names) if len(names) <= DUMBBELL_MAX else 0
    height = max(SUMMARY_FIGSIZE[1], 0.75 + 0.19 * rows_right)
    fig = Figure(figsize=(SUMMARY_FIGSIZE[0], height), dpi=FIGURE_DPI)
    margin_in = 0.45  # inches for the x labels and titles, whatever the height
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1], "wspace": 0.55 if rows_right else 0.3,
                                                  "left": 0.09, "right": 0.98, "bottom": margin_in / height,
                                                  "top": 1 - 0.3 / height})
    for row, (label, default, calibrated) in enumerate(rows):
        for offset, interval, color, marker in ((0.15, default, COLOR_DEFAULT, "s"), (-0.15, calibrated, COLOR_FITTED, "o")):
            value, low, high, _ = interval
            left.errorbar([value], [row + offset], xerr=[[value - low], [high - value]], color=color, marker=marker,
                          markersize=5, capsize=3, linewidth=1.2, markerfacecolor="white" if marker == "s" else color)
            left.annotate(f"{value:.3f}", (value, row + offset), xytext=(0, 4), textcoords="offset points",
                          fontsize=7, ha="center", color=color)
    if rows_right:  # keep the micro/macro panel its usual height at the top, however many classes
        box = left.get_position()
        panel = (SUMMARY_FIGSIZE[1] - 0.75) / height
        left.set_position([box.x0, box.y1 - panel, box.width, panel])
    left.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
    left.set_ylim(len(rows) - 0.5, -0.6)
    left.set_xlim(0, 1.02)
    left.set_title("default (square) vs calibrated (dot)", fontsize=8)
    left.set_xlabel("F1", fontsize=7, labelpad=1)

    change = f1_calibrated - f1_default
    gained, lost = int((change > 1e-12).sum()), int((change < -1e-12).sum())
    title = f"per class F1: {gained} gained, {lost} lost, {len(names) - gained - lost} unchanged"
    if len(names) <= DUMBBELL_MAX:
        # One row per class, best gain on top: default (square) -> calibrated (dot).
        order = np.argsort(-change, kind="stable")
        for row, c in enumerate(order):
            color = COLOR_F1 if change[c] > 1e-12 else COLOR_FITTED if change[c] < -1e-12 else COLOR_NEG
            right.plot([f1_default[c], f1_calibrated[c]], [row, row], color=color, linewidth=1.5)
            right.plot([f1_default[c]], [row], marker="s", markersize=4.5, color=COLOR_DEFAULT, markerfacecolor="white")
            right.plot([f1_calibrated[c]], [row], marker="o", markersize=4.5, color=COLOR_FITTED)
        right.set_yticks(range(len(order)), [names[c][:28] for c in order], fontsize=7)
        right.set_ylim(len(order) - 0.5, -0.7)
        right.set_xlim(-0.03, 1.03)
        right.set_xlabel("F1", fontsize=7, labelpad=1)
    else:
        colors = np.where(change > 1e-12, COLOR_F1, np.where(change < -1e-12, COLOR_FITTED, COLOR_NEG))
        right.plot([0, 1], [0, 1], color=COLOR_NEG, linewidth=0.8, linestyle=":")
        right.scatter(f1_default, f1_calibrated, c=colors, s=6, edgecolors="none", alpha=0.8)
        right.set_xlim(-0.04, 1.04)
        right.set_ylim(-0.04, 1.04)
        right.set_xlabel("F1 with the default threshold", fontsize=7, labelpad=1)
        right.set_ylabel("F1 calibrated", fontsize=7, labelpad=1)
        title += " (green above the diagonal: gained)"
    right.set_title(title, fontsize=8)
    for ax in (left, right):
        _style_axes(ax)
    return _figure_uri(fig)


# --- HTML -------------------------------------------------------------------------------------


_CSS = """
:root{--fg:#1d1d1f;--muted:#666;--line:#ddd;--gain:#00795a;--loss:#b3400a;--bg2:#f6f6f4}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0 auto;
 max-width:1500px;padding:16px 24px 40px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid var(--line);padding-bottom:3px}
dl.meta{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:2px 14px;margin:6px 0 0;font-size:13px}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{background:var(--bg2);position:sticky;top:0}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th[aria-sort=ascending]::after{content:" \\25B2";font-size:9px}
table.sortable thead th[aria-sort=descending]::after{content:" \\25BC";font-size:9px}
th.group{text-align:center;border-bottom:none}
td.gain{color:var(--gain);font-weight:600}td.loss{color:var(--loss);font-weight:600}
tr.nolabel td{color:#999}
.tablewrap{display:inline-block;max-width:100%;max-height:70vh;overflow:auto;border:1px solid var(--line)}
.badge{display:inline-block;padding:0 5px;border-radius:3px;font-size:11px;background:#eee}
.badge.default{background:#fde2cf;color:#8a3000}
.verdict{font-weight:600}.verdict.none{font-weight:400;color:var(--muted)}
.summary td.num{min-width:170px}
.legend{font-size:12px;color:var(--muted);margin:4px 0 10px}
.legend span.sw{display:inline-block;width:18px;height:0;border-top:3px solid;vertical-align:middle;margin:0 4px 0 12px}
.legend span.sw.dash{border-top-style:dashed}
.legend span.box{display:inline-block;width:12px;height:10px;vertical-align:middle;margin:0 4px 0 12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(640px,1fr));gap:10px;justify-items:start}
figure{margin:0;border:1px solid var(--line);padding:4px;background:#fff}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:var(--muted);padding:2px 4px}
figure.summary{display:inline-block}
p.note{color:var(--muted);font-size:13px;margin:4px 0}
a{color:#0b5cad}
"""

# Sorts the table on a header click: numbers by their data-v attribute (empty last), text otherwise.
_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.querySelectorAll("thead tr:last-child th");
  heads.forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var key = function (row) { var c = row.cells[col]; return c.hasAttribute("data-v") ? c.getAttribute("data-v") : c.textContent; };
      var numeric = th.getAttribute("data-type") === "num";
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (numeric) {
          if (x === "") return y === "" ? 0 : 1;
          if (y === "") return -1;
          return asc ? x - y : y - x;
        }
        return asc ? x.localeCompare(y) : y.localeCompare(x);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_interval(interval: tuple | None, *, signed: bool = False, scale: float = 1.0, digits: int = 3) -> str:
    if interval is None:
        return "–"
    value, low, high, _ = interval
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{value * scale:{spec}} [{low * scale:{spec}}, {high * scale:{spec}}]"


def _num_cell(value: float, text: str | None = None, css: str = "") -> str:
    v = "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"
    shown = text if text is not None else ("–" if v == "" else f"{value:.2f}")
    cls = f' class="{css}"' if css else ""
    return f'<td data-v="{v}"{cls}>{_e(shown)}</td>'


def _meta_html(meta: Mapping[str, Any]) -> str:
    known = {key for key, _ in META_FIELDS}
    items = [(label, meta[key]) for key, label in META_FIELDS if meta.get(key) not in (None, "")]
    items += [(key.replace("_", " "), value) for key, value in meta.items()
              if key not in known and key != "title" and value not in (None, "")]
    return "".join(f"<dt>{_e(label)}</dt><dd>{_e(value)}</dd>" for label, value in items)


def _events_html(events: Mapping[str, Any]) -> str:
    """The tuned event post-processing stack per class, with event-F1 before and after when given."""
    classes = events.get("classes") or {}
    before = events.get("baseline_class_scores") or {}
    after = events.get("class_scores") or {}
    fitted = events.get("fitted") or {}
    metric = {"event_macro_f1": "event-based macro-F1", "segment_macro_f1": "segment-based macro-F1"}.get(
        str(fitted.get("metric")), str(fitted.get("metric", "macro-F1")).replace("_", " "))
    hop = events.get("frame_hop_s")
    untuned = [str(name) for name in fitted.get("untuned_classes") or []]
    rows = []
    scored = bool(before or after)
    for name, stack in classes.items():
        b, a = before.get(name), after.get(name)
        b = None if b is None or (isinstance(b, float) and math.isnan(b)) else float(b)
        a = None if a is None or (isinstance(a, float) and math.isnan(a)) else float(a)
        change = a - b if a is not None and b is not None else None
        css = "gain" if change and change > 1e-12 else "loss" if change and change < -1e-12 else ""
        if stack.get("binarize") == "hysteresis":
            decide = f"hysteresis {stack.get('high', stack.get('threshold', 0)):.3f} / {stack.get('low', 0):.3f}"
        else:
            decide = f"> {float(stack.get('threshold', 0.5)):.3f}"
        smoothing = stack.get("smoothing", "none")
        kernel = ""
        if smoothing not in (None, "none"):
            frames = stack.get("kernel_frames")
            seconds = f" ({float(frames) * float(hop):.2f} s)" if hop and frames is not None else ""
            kernel = f" {frames} frames{seconds}"
        rows.append(
            f"<tr><td>{_e(name)}</td>"
            + ((_num_cell(b) + _num_cell(a) + _num_cell(change, "–" if change is None else f"{change:+.2f}", css))
               if scored else "")
            + f"<td>{_e(str(smoothing) + kernel)}</td><td>{_e(decide)}</td>"
            + _num_cell(float(stack.get("min_gap_s", 0.0)), f"{float(stack.get('min_gap_s', 0.0)):.2f} s")
            + _num_cell(float(stack.get("min_duration_s", 0.0)), f"{float(stack.get('min_duration_s', 0.0)):.2f} s")
            + "</tr>")
    score, base = fitted.get("score"), fitted.get("baseline_score")
    line = (f"<p class='note'>{_e(metric)}: {float(base):.3f} with threshold 0.5 and no smoothing, "
            f"{float(score):.3f} tuned (on the tuning files)."
            + (f" {len(untuned)} class(es) without reference events keep threshold 0.5 and no smoothing."
               if untuned else "") + "</p>" if score is not None and base is not None else "")
    return (
        "<section id='events'><h2>Sound event detection: the tuned post-processing</h2>" + line
        + "<div class='tablewrap'><table class='sortable'><thead><tr>"
        "<th>class</th>" + ("<th data-type='num'>event-F1 at 0.5</th><th data-type='num'>event-F1 tuned</th>"
                             "<th data-type='num'>change</th>" if scored else "") + "<th>smoothing</th><th>decision</th><th data-type='num'>min gap</th>"
        "<th data-type='num'>min length</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div></section>"
    )


def report(
    scores: Any | None, targets: Any | None, thresholds: Thresholds | Sequence[float] | np.ndarray, *,
    class_names: Sequence[str] | None = None, default: float | Sequence[float] | np.ndarray = DEFAULT_THRESHOLD,
    decided: Any | None = None, meta: Mapping[str, Any] | None = None,
    intervals: Mapping[str, Mapping[str, Any]] | None = None, gains: Mapping[str, Any] | None = None,
    guard: Mapping[str, Any] | None = None, events: Mapping[str, Any] | None = None,
    probabilities: Any | None = None, learning_curve: Any | None = None,
) -> str:
    """The calibration report as one self-contained HTML document.

    Parameters
    ----------
    scores : array_like or None
        Clip scores ``(n_clips, n_classes)`` in [0, 1]: the clips the table and figures describe
        (the held-out clips of a calibration). None for an events-only report.
    targets : array_like or None
        0/1 labels, same shape.
    thresholds : Thresholds or array_like
        The fitted thresholds. A :class:`Thresholds` may hold more classes than ``scores``: the
        columns are matched by ``class_names``.
    class_names : sequence of str, optional
        One per score column; default: the names of ``thresholds``.
    default : float or array_like
        The default threshold(s) the calibration is compared with, one or one per column.
    decided : array_like, optional
        Calibrated decisions ``(n_clips, n_classes)`` bool when they are not ``scores >
        thresholds`` (cross-validation: each clip decided by the fold that did not see it).
    meta : mapping, optional
        Header fields: ``model``, ``data``, ``labels``, ``n_clips``, ``split``, ``evaluated_on``,
        ``method``, ``objective``, ``date`` (default: now), ``calitag_version``, ``title``, and
        ``intervals`` (how the intervals were made, shown in the summary); other keys are listed
        after them.
    intervals : mapping, optional
        ``{"default"|"calibrated": {"micro_f1"|"macro_f1": interval}}``, an interval being any object
        or mapping with ``value``, ``low``, ``high`` (and optionally ``level``).
    gains : mapping, optional
        ``{"micro_f1"|"macro_f1": gain}``: a paired gain (with ``gain``, an interval, and
        ``verdict()``) or an interval of calibrated minus default.
    guard : mapping, optional
        Per class name: ``kept`` ("fit", "default" or "fallback"), ``positives`` seen and ``reason``.
    events : mapping, optional
        A thresholds file's ``events`` section (``classes``, ``fitted``), optionally with
        ``class_scores`` and ``baseline_class_scores`` (event-F1 per class tuned and at 0.5).
    probabilities : array_like, optional
        Calibrated probabilities of the same clips, same shape as ``scores``: adds per class ECE (15
        equal bins) and Brier score before and after, and a reliability diagram.
    learning_curve : LearningCurve, optional
        Held-out F against the number of fitting clips (:mod:`calitag.thresholds.learning_curve`): adds its plot.

    Returns
    -------
    str
        The HTML text (UTF-8). Figures are PNG data URIs; the page loads nothing from the network.

    Raises
    ------
    ScoresError
        Scores or labels not valid matrices of one shape; thresholds or class names not matching the columns.
    """
    meta = dict(meta or {})
    meta.setdefault("date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    meta.setdefault("calitag_version", __version__)
    title = meta.pop("title", None) or "Calibration report" + (f": {meta['model']}" if meta.get("model") else "")
    body: list[str] = []
    footer = ""
    if scores is not None:
        table, figures, n_figures = _clip_sections(scores, targets, thresholds, class_names=class_names,
                                                   default=default, decided=decided, intervals=intervals,
                                                   gains=gains, guard=guard,
                                                   interval_note=meta.pop("intervals", None))
        body += [table, figures]
        footer = f"; {n_figures} figures; a clip has a class when its score is strictly above the threshold"
        if probabilities is not None:
            body.append(_probabilities_html(scores, probabilities, targets, list(
                thresholds.class_names if class_names is None else class_names)))
    if events:
        body.append(_events_html(events))
    if learning_curve is not None:
        body.append(_learning_curve_html(learning_curve))
    return _page(title, meta, body, footer)  # after _clip_sections: it takes "intervals" out of meta


def _probabilities_html(scores: Any, probabilities: Any, targets: Any, names: Sequence[str]) -> str:
    """ECE and Brier score per class, raw scores against calibrated probabilities, and reliability diagrams."""
    from calitag.thresholds.probability import brier_score, expected_calibration_error

    raw = check_scores(scores, name="scores")
    calibrated = check_scores(probabilities, name="probabilities")
    truth = check_targets(targets, raw.shape, name="labels")
    if calibrated.shape != raw.shape:
        raise ScoresError(f"probabilities have shape {calibrated.shape}, the scores {raw.shape}: expected the same")
    ece = expected_calibration_error(raw, truth), expected_calibration_error(calibrated, truth)
    brier = brier_score(raw, truth), brier_score(calibrated, truth)
    rows = "".join(
        f"<tr><td>{_e(name)}</td>{_num_cell(ece[0][c], f'{ece[0][c]:.4f}')}{_num_cell(ece[1][c], f'{ece[1][c]:.4f}')}"
        f"{_num_cell(brier[0][c], f'{brier[0][c]:.4f}')}{_num_cell(brier[1][c], f'{brier[1][c]:.4f}')}</tr>"
        for c, name in enumerate(names))
    mean = (f"<tr><td><b>mean</b></td>{_num_cell(ece[0].mean(), f'{ece[0].mean():.4f}')}"
            f"{_num_cell(ece[1].mean(), f'{ece[1].mean():.4f}')}{_num_cell(brier[0].mean(), f'{brier[0].mean():.4f}')}"
            f"{_num_cell(brier[1].mean(), f'{brier[1].mean():.4f}')}</tr>")
    return ("<section id='probabilities'><h2>Probabilities</h2><p class='note'>Class-wise expected calibration "
            "error (15 equal-width bins) and Brier score of the same clips, raw scores against calibrated "
            "probabilities (maps fitted on other clips).</p><table><thead><tr><th>class</th><th>ECE raw</th>"
            "<th>ECE calibrated</th><th>Brier raw</th><th>Brier calibrated</th></tr></thead><tbody>"
            f"{rows}{mean}</tbody></table>"
            f"<img alt='reliability diagrams' src='{_reliability_figure(raw, calibrated, truth, names)}'></section>")


def _reliability_figure(raw: np.ndarray, calibrated: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> str:
    """Reliability diagrams, one small panel per class: positive rate against mean value per bin."""
    from matplotlib.figure import Figure

    from calitag.thresholds.probability import reliability

    n_cols = min(4, len(names))
    n_rows = math.ceil(len(names) / n_cols)
    fig = Figure(figsize=(2.2 * n_cols, 2.0 * n_rows), dpi=FIGURE_DPI)
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False, gridspec_kw={"hspace": 0.55})).reshape(-1)
    for c, ax in enumerate(axes):
        if c >= len(names):
            ax.set_visible(False)
            continue
        ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.7, linestyle="--")
        for values, color, label in ((raw, COLOR_DEFAULT, "raw"), (calibrated, COLOR_FITTED, "calibrated")):
            points = reliability(values[:, c], truth[:, c])
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=2.5, linewidth=1.0,
                    color=color, label=label)
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.set_title(str(names[c])[:28], fontsize=7.5)
        _style_axes(ax)
    axes[0].legend(fontsize=6.5, loc="upper left", frameon=False)
    return _figure_uri(fig)


def _page(title: str, meta: Mapping[str, Any], body: Sequence[str], footer: str) -> str:
    """The HTML document: head (style), header (title, meta fields), the sections, footer, script."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='generator' content='{GENERATOR} {_e(__version__)}'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>"
        f"<header><h1>{_e(title)}</h1><dl class='meta'>{_meta_html(meta)}</dl></header>\n"
        + "\n".join(body)
        + f"\n<footer><p class='note'>Made by calitag {_e(__version__)}" + footer + ".</p></footer>"
        f"<script>{_JS}</script></body></html>\n"
    )


@dataclass(frozen=True)
class _ClipInputs:
    """The checked inputs of a clip-score report; arrays are (n_clips, n_classes) or (n_classes,)."""

    scores: np.ndarray
    truth: np.ndarray
    names: tuple[str, ...]
    fitted: np.ndarray
    defaults: np.ndarray
    decided: np.ndarray


def _clip_sections(
    scores: Any, targets: Any | None, thresholds: Thresholds | Sequence[float] | np.ndarray, *,
    class_names: Sequence[str] | None, default: float | Sequence[float] | np.ndarray, decided: Any | None,
    intervals: Mapping[str, Mapping[str, Any]] | None, gains: Mapping[str, Any] | None,
    guard: Mapping[str, Any] | None, interval_note: Any,
) -> tuple[str, str, int]:
    """(summary + table HTML, figures HTML, number of figures) for clip scores."""
    clips = _clip_inputs(scores, targets, thresholds, class_names=class_names, default=default, decided=decided)
    before = _counts_report(clips.scores > clips.defaults, clips.truth, clips.defaults, clips.names)
    after = _counts_report(clips.decided, clips.truth, clips.fitted, clips.names)
    labeled = np.flatnonzero(clips.truth.any(axis=0))
    figures, ap = _class_figures(clips, labeled)
    summary_rows, interval_rows, level_text = _summary_rows(before, after, intervals, gains, interval_note)
    summary_figure = _summary_figure(interval_rows, [clips.names[c] for c in labeled], before.f1[labeled],
                                     after.f1[labeled]) if labeled.size else None
    guard = guard or {}
    rows = _class_rows(clips, before, after, ap, labeled, guard)
    table = (_summary_html(clips, labeled.size, level_text, summary_rows, summary_figure)
             + _classes_html(rows, len(clips.names) - labeled.size, with_guard=bool(guard)))
    return table, _figures_html(figures, labeled.size), len(figures) + (1 if summary_figure else 0)


def _clip_inputs(
    scores: Any, targets: Any | None, thresholds: Thresholds | Sequence[float] | np.ndarray, *,
    class_names: Sequence[str] | None, default: float | Sequence[float] | np.ndarray, decided: Any | None,
) -> _ClipInputs:
    """Check the clip scores, labels, thresholds, default(s) and decisions against each other."""
    scores = check_scores(scores, source="report", name="scores")
    if targets is None:
        raise ScoresError("a report of clip scores needs their 0/1 labels (targets)")
    truth = check_targets(targets, scores.shape, source="report", name="targets")
    n_classes = scores.shape[1]
    names = tuple(class_names) if class_names is not None else tuple(getattr(thresholds, "class_names", ()) or
                                                                       (str(i) for i in range(n_classes)))
    if len(names) != n_classes:
        raise ScoresError(f"{len(names)} class names for {n_classes} score columns")
    if isinstance(thresholds, Thresholds):
        index = {name: i for i, name in enumerate(thresholds.class_names)}
        absent = [name for name in names if name not in index]
        if absent:
            raise ScoresError(f"the thresholds have no class {absent[0]!r} ({len(absent)} of the score columns "
                              f"are not in them): they were fitted for another class list")
        fitted = np.array([thresholds.values[index[name]] for name in names])
    else:
        fitted = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if fitted.size != n_classes:
            raise ScoresError(f"{fitted.size} thresholds for {n_classes} score columns")
    defaults = np.broadcast_to(np.asarray(default, dtype=np.float64).reshape(-1), (n_classes,)).copy() \
        if np.size(default) in (1, n_classes) else None
    if defaults is None:
        raise ScoresError(f"{np.size(default)} default thresholds for {n_classes} score columns: give one or one per class")
    calibrated_decided = scores > fitted if decided is None else np.asarray(decided, dtype=bool)
    if calibrated_decided.shape != scores.shape:
        raise ScoresError(f"calibrated decisions have shape {calibrated_decided.shape}, scores {scores.shape}")
    return _ClipInputs(scores, truth, names, fitted, defaults, calibrated_decided)


def _class_figures(clips: _ClipInputs, labeled: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The figure HTML of each class with positive labels, and every class's average precision (NaN without)."""
    figures, ap = [], np.full(len(clips.names), np.nan)
    drawer = _ClassFigure(np.linspace(0.0, 1.0, CURVE_POINTS)) if labeled.size else None
    for c in labeled:
        name = clips.names[c]
        uri, ap[c] = drawer.render(name, clips.scores[:, c], clips.truth[:, c], float(clips.defaults[c]),
                                   float(clips.fitted[c]))
        figures.append(
            f"<figure class='plot' data-kind='class' id='fig-{c}'><img loading='lazy' alt='{_e(name)}: score "
            f"histograms, F1/precision/recall against the threshold, precision-recall curve' src='{uri}'></figure>")
    return figures, ap


def _summary_rows(
    before: ClassificationReport, after: ClassificationReport, intervals: Mapping[str, Mapping[str, Any]] | None,
    gains: Mapping[str, Any] | None, interval_note: Any,
) -> tuple[list[str], list[tuple[str, tuple, tuple]], str]:
    """The micro/macro-F1 rows of the summary table, their (label, default, calibrated) intervals for the
    summary figure, and the sentence on how the intervals were made."""
    summary_rows, interval_rows, levels = [], [], []
    given = intervals or {}
    for key, label in (("micro_f1", "micro-F1"), ("macro_f1", "macro-F1")):
        d_given = _interval((given.get("default") or {}).get(key))
        c_given = _interval((given.get("calibrated") or {}).get(key))
        d = d_given or (getattr(before, key), getattr(before, key), getattr(before, key), None)
        c = c_given or (getattr(after, key), getattr(after, key), getattr(after, key), None)
        gain = _gain((gains or {}).get(key))
        levels += [x[3] for x in (d, c, gain[0] if gain else None) if x and x[3]]
        interval_rows.append((label, d, c))
        if gain:
            gain_text = _fmt_interval(gain[0], signed=True, scale=100, digits=1) + " points"
        else:  # the point difference only: an interval of it needs a paired resampling the caller did not give
            gain_text = f"{100 * (c[0] - d[0]):+.1f} points"
        verdict = gain[1] if gain and gain[1] else ("" if gain else "no paired interval given")
        summary_rows.append(
            f"<tr><td>{label}</td><td class='num'>{_e(_fmt_interval(d) if d_given else f'{d[0]:.3f}')}</td>"
            f"<td class='num'>{_e(_fmt_interval(c) if c_given else f'{c[0]:.3f}')}</td>"
            f"<td class='num'>{_e(gain_text)}</td><td class='verdict{'' if gain else ' none'}'>{_e(verdict)}</td></tr>")
    if interval_note:
        level_text = f"intervals: {interval_note}"
    elif given or gains:
        level_text = f"{levels[0] * 100:.0f}% intervals" if levels else "intervals as the caller computed them"
    else:
        level_text = "no intervals given"
    return summary_rows, interval_rows, level_text


def _class_rows(clips: _ClipInputs, before: ClassificationReport, after: ClassificationReport, ap: np.ndarray,
                labeled: np.ndarray, guard: Mapping[str, Any]) -> list[str]:
    """One row of the per-class table per class, by decreasing support; guard columns when ``guard``."""
    names, defaults, fitted = clips.names, clips.defaults, clips.fitted
    rows = []
    order = sorted(range(len(names)), key=lambda c: (-int(before.support[c]), names[c]))
    for c in order:
        support = int(before.support[c])
        kept, positives, reason = _guard(guard.get(names[c]))
        change = float(after.f1[c] - before.f1[c])
        css = "gain" if change > 1e-12 else "loss" if change < -1e-12 else ""
        name_cell = (f"<a href='#fig-{c}'>{_e(names[c])}</a>" if c in labeled else f"{_e(names[c])}")
        guard_cell = _guard_badge(kept, reason)
        moved = float(fitted[c]) - float(defaults[c])
        rows.append(
            f"<tr class='{'labeled' if support else 'nolabel'}'><td data-v='{_e(names[c].lower())}'>{name_cell}</td>"
            + _num_cell(support, str(support))
            + _num_cell(float(defaults[c]), f"{defaults[c]:.2f}")
            + _num_cell(float(fitted[c]), f"{fitted[c]:.3f}")
            + _num_cell(moved, f"{moved:+.3f}")
            + _num_cell(float(before.precision[c])) + _num_cell(float(before.recall[c]))
            + _num_cell(float(before.f1[c]))
            + _num_cell(float(after.precision[c])) + _num_cell(float(after.recall[c]))
            + _num_cell(float(after.f1[c]))
            + _num_cell(change, f"{change:+.3f}", css)
            + _num_cell(float(ap[c]))
            + ((_num_cell(positives, "–" if positives is None else str(positives))
                + f"<td data-v='{_e(kept or '')}'>{guard_cell}</td>") if guard else "")
            + "</tr>")
    return rows


def _summary_html(clips: _ClipInputs, n_labeled: int, level_text: str, summary_rows: Sequence[str],
                  summary_figure: str | None) -> str:
    """The summary section: counts, the micro/macro-F1 table and the summary figure."""
    n_clips, n_classes = clips.scores.shape
    defaults = clips.defaults
    return (
        "<section id='summary'><h2>Summary</h2>"
        f"<p class='note'>{n_clips} clips, {n_classes} classes ({n_labeled} with positive labels). "
        f"F1 with the default threshold{'s' if np.ptp(defaults) > 0 else ' ' + format(defaults[0], '.2f')} "
        f"against the calibrated thresholds; {_e(level_text)}; the gain is calibrated minus default, in F1 points.</p>"
        "<table class='summary'><thead><tr><th></th><th>default</th><th>calibrated</th><th>gain</th><th>verdict</th>"
        "</tr></thead><tbody>" + "".join(summary_rows) + "</tbody></table>"
        + (f"<figure class='plot summary' data-kind='summary'><img alt='summary: micro and macro F1 default against "
           f"calibrated, and per-class F1 before and after' src='{summary_figure}'></figure>" if summary_figure else "")
        + "</section>\n"
    )


def _classes_html(rows: Sequence[str], n_unlabeled: int, *, with_guard: bool) -> str:
    """The per-class section: its note and the sortable table (guard columns when ``with_guard``)."""
    return (
        "<section id='classes'><h2>Per class</h2>"
        "<p class='note'>Click a column header to sort. P, R, F1: precision, recall, F1; change: calibrated F1 "
        "minus default F1; AP: average precision (threshold-free)"
        + ("; guard: whether the fitted threshold was kept, or the fallback (the label-rate threshold) or the "
           "default restored" if with_guard else "")
        + "." + (f" {n_unlabeled} class(es) without positive labels are listed greyed, without figures." if n_unlabeled
                 else "") + "</p>"
        "<div class='tablewrap'><table class='sortable' id='class-table'><thead>"
        "<tr><th></th><th></th><th class='group' colspan='3'>threshold</th><th class='group' colspan='3'>default</th>"
        "<th class='group' colspan='3'>calibrated</th><th></th><th></th>"
        + ("<th class='group' colspan='2'>guard</th>" if with_guard else "") + "</tr>"
        "<tr><th>class</th><th data-type='num'>support</th><th data-type='num'>default</th>"
        "<th data-type='num'>fitted</th><th data-type='num'>moved</th>"
        "<th data-type='num'>P</th><th data-type='num'>R</th><th data-type='num'>F1</th>"
        "<th data-type='num'>P</th><th data-type='num'>R</th><th data-type='num'>F1</th>"
        "<th data-type='num'>change</th><th data-type='num'>AP</th>"
        + ("<th data-type='num'>positives seen</th><th>kept</th>" if with_guard else "") + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></div></section>"
    )


#: The key to the colours and line styles of the per-class figures.
_LEGEND = (
    "<div class='legend'>histograms: <span class='box' style='background:#9a9a9a99'></span>negatives"
    "<span class='box' style='background:#0072B2aa'></span>positives (each as a share of its group) · "
    "thresholds: <span class='sw dash' style='border-color:#333'></span>default"
    "<span class='sw' style='border-color:#D55E00'></span>fitted · curves: "
    "<span class='sw' style='border-color:#009E73'></span>F1<span class='sw' style='border-color:#0072B2'></span>"
    "precision<span class='sw' style='border-color:#E69F00'></span>recall · precision-recall: "
    "&#9633; default, <span style='color:#D55E00'>&#9679;</span> fitted operating point</div>"
)


def _figures_html(figures: Sequence[str], n_labeled: int) -> str:
    """The per-class figures section, with the legend."""
    return (
        f"<section id='figures'><h2>Per-class figures ({n_labeled} classes with positive labels)</h2>{_LEGEND}"
        f"<div class='grid'>{''.join(figures)}</div></section>"
    )


def _learning_curve_html(curve: Any) -> str:
    """The learning curve section: held-out F (mean and 80% band over the repeats) per number of fitting clips."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 2.4), dpi=FIGURE_DPI)
    ax = fig.add_subplot(1, 1, 1)
    low, high = curve.band()
    ax.fill_between(curve.sizes, low, high, alpha=0.25, linewidth=0)
    ax.plot(curve.sizes, curve.mean, marker="o", markersize=3)
    ax.set_xlabel("fitting clips", fontsize=8)
    ax.set_ylabel(f"held-out {curve.objective.replace('_', '-')}", fontsize=8)
    _style_axes(ax)
    fig.tight_layout()
    return (f"<section id='learning-curve'><h2>Learning curve</h2><p class='note'>Thresholds fitted on subsets of "
            f"the labeled clips, measured on {curve.n_held_out} held-out clips; mean and 80% band over "
            f"{len(curve.values)} splits. A curve still rising at the right says more labels help.</p>"
            f"<img alt='learning curve' src='{_figure_uri(fig)}'></section>")


def is_report(path: str | Path) -> bool:
    """Whether ``path`` is an HTML file written by :func:`report` (its generator mark is in the head)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return f"<meta name='generator' content='{GENERATOR}".encode() in head


def check_report_target(path: str | Path, *, force: bool = False) -> None:
    """Raise :class:`OutputError` if writing a report to ``path`` would replace another kind of file.

    A missing file or an earlier calitag report may be replaced; anything else only with ``force``.
    The report extra (matplotlib, Pillow) must be installed: a :class:`MissingDependencyError` says so first.
    """
    from calitag._extras import require_installed

    require_installed(("matplotlib", "PIL"), extra="report", what="the HTML report")
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target} is a folder: give the report's file name, e.g. {target / 'report.html'}")
    if target.exists() and not force and not is_report(target):
        raise OutputError(f"{target} exists and is not a calitag report: choose another name or pass --force to replace it")
    if not target.parent.is_dir():
        raise OutputError(f"cannot write {target}: folder {target.parent} does not exist")


def write_report(path: str | Path, text: str, *, force: bool = False) -> Path:
    """Write a report atomically; refuses to replace a file that is not a calitag report unless ``force``.

    Raises
    ------
    OutputError
        The target exists and is another kind of file, or the folder is missing or not writable.
    """
    from calitag._fileio import write_atomic

    check_report_target(path, force=force)
    try:
        write_atomic(path, text.encode("utf-8"))
    except OSError as err:
        raise OutputError(f"cannot write report {path}: {err}") from err
    return Path(path)
