"""Event- and segment-based F1: hand-computed values and agreement with sed_eval 0.2.1."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from calitag.errors import LabelsError
from calitag.thresholds.events.postprocess import Event
from calitag.thresholds.events.event_metrics import (
    count_event_matches,
    event_based_scores,
    segment_based_scores,
)


@pytest.fixture(scope="module")
def sed_eval():
    """The reference implementation (test-only dependency)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dcase_util imports pkg_resources, which warns
        return pytest.importorskip("sed_eval", reason="sed_eval is the test extra's reference implementation")


def _sed_eval_counts(sed_eval, reference, estimated, classes, kind):
    """Run sed_eval file by file as DCASE does and return it with its class-wise counts."""
    if kind == "event":
        metric = sed_eval.sound_event.EventBasedMetrics(
            event_label_list=list(classes), t_collar=0.2, percentage_of_length=0.2,
            empty_system_output_handling="zero_score",
        )
    else:
        metric = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(classes), time_resolution=1.0)
        metric.empty_system_output_handling = "zero_score"

    def as_dicts(events, file):
        return [{"filename": e.file, "onset": e.onset_s, "offset": e.offset_s, "event_label": e.label}
                for e in events if e.file == file]

    for file in sorted({e.file for e in reference} | {e.file for e in estimated}):
        metric.evaluate(as_dicts(reference, file), as_dicts(estimated, file))
    return metric


# a.wav and b.wav; the expected counts are worked out in the comments.
REF = [
    Event("a.wav", 1.0, 3.0, "Speech"),
    Event("a.wav", 5.0, 6.0, "Speech"),
    Event("a.wav", 2.0, 2.5, "Dog"),
    Event("b.wav", 0.5, 1.5, "Dog"),
]
EST = [
    Event("a.wav", 1.15, 3.35, "Speech"),  # onset +0.15, offset +0.35 <= 20% of 2 s: hit
    Event("a.wav", 5.3, 6.0, "Speech"),  # onset +0.3 > 0.2: miss
    Event("a.wav", 2.0, 2.8, "Dog"),  # offset +0.3 > max(0.2, 0.1): miss
    Event("a.wav", 7.0, 8.0, "Cat"),  # a class with no reference
    Event("b.wav", 0.6, 1.6, "Dog"),  # hit
    Event("b.wav", 3.0, 4.0, "Dog"),  # false alarm
]


def test_event_based_hand_computed_values():
    """Event-based counts and F1 equal the values worked out by hand on a small event list."""
    s = event_based_scores(REF, EST)
    assert s.class_names == ("Cat", "Dog", "Speech")
    assert s.n_ref.tolist() == [0, 2, 2]
    assert s.n_sys.tolist() == [1, 3, 2]
    assert s.n_tp.tolist() == [0, 1, 1]
    assert math.isnan(s.f1[0])
    assert s.f1[1] == pytest.approx(0.4)  # P 1/3, R 1/2
    assert s.f1[2] == pytest.approx(0.5)
    assert s.macro_f1 == pytest.approx(0.45)  # the class without reference is left out
    assert s.macro_precision == pytest.approx((0 + 1 / 3 + 1 / 2) / 3)
    assert s.micro_f1 == pytest.approx(0.4)  # TP 2, n_sys 6, n_ref 4


def test_event_based_equals_sed_eval_on_hand_made_lists(sed_eval):
    """The event-based counts, macro and micro F1 equal sed_eval's on the hand-made lists."""
    s = event_based_scores(REF, EST)
    m = _sed_eval_counts(sed_eval, REF, EST, s.class_names, "event")
    for i, name in enumerate(s.class_names):
        cw = m.class_wise[name]
        assert (s.n_ref[i], s.n_sys[i], s.n_tp[i]) == (cw["Nref"], cw["Nsys"], cw["Ntp"])
    assert s.macro_f1 == pytest.approx(m.results_class_wise_average_metrics()["f_measure"]["f_measure"])
    assert s.micro_f1 == pytest.approx(m.results_overall_metrics()["f_measure"]["f_measure"])


def test_optimal_matching_beats_greedy_order():
    """Two estimates that both fit one reference are paired so that both references are matched."""
    ref = [Event("c.wav", 0.3, 1.3, "Dog"), Event("c.wav", 0.0, 1.0, "Dog")]
    est = [Event("c.wav", 0.15, 1.15, "Dog"), Event("c.wav", 0.45, 1.45, "Dog")]
    assert event_based_scores(ref, est).n_tp.tolist() == [2]
    assert count_event_matches(np.array([0.3, 0.0]), np.array([1.3, 1.0]),
                               np.array([0.15, 0.45]), np.array([1.15, 1.45])) == 2


def test_segment_based_hand_computed_values(sed_eval):
    """Segment-based counts on 1-s segments equal hand-worked values and sed_eval's."""
    ref = [Event("a.wav", 0.5, 2.2, "Speech"), Event("a.wav", 3.0, 3.5, "Dog")]
    est = [Event("a.wav", 1.1, 1.9, "Speech"), Event("a.wav", 2.9, 3.2, "Dog")]
    s = segment_based_scores(ref, est)
    assert s.class_names == ("Dog", "Speech")
    assert s.n_ref.tolist() == [1, 3]  # Speech in segments 0, 1, 2; Dog in 3
    assert s.n_sys.tolist() == [2, 1]
    assert s.n_tp.tolist() == [1, 1]
    assert s.macro_f1 == pytest.approx((2 / 3 + 0.5) / 2)
    assert s.micro_f1 == pytest.approx(4 / 7)
    m = _sed_eval_counts(sed_eval, ref, est, s.class_names, "segment")
    assert s.macro_f1 == pytest.approx(m.results_class_wise_average_metrics()["f_measure"]["f_measure"])
    assert s.micro_f1 == pytest.approx(m.results_overall_metrics()["f_measure"]["f_measure"])


def _random_events(rng, files, classes, n):
    events = []
    for _ in range(n):
        on = round(float(rng.uniform(0, 9)), 2)
        events.append(Event(str(rng.choice(files)), on, round(on + float(rng.uniform(0.05, 3)), 2),
                            str(rng.choice(classes))))
    return events


@pytest.mark.parametrize("seed", range(6))
def test_random_lists_agree_with_sed_eval(sed_eval, seed):
    """On random overlapping event lists both metrics give sed_eval's per-class counts and F1."""
    rng = np.random.default_rng(seed)
    files, classes = ["x.wav", "y.wav", "z.wav"], ["Alarm", "Dog", "Speech"]
    ref = _random_events(rng, files, classes, 25)
    # Estimates near the references (some within the collars, some not) plus false alarms.
    est = [Event(e.file, max(0.0, round(e.onset_s + float(rng.normal(0, 0.2)), 2)),
                 round(e.offset_s + float(rng.normal(0, 0.3)), 2) + 0.05, e.label)
           for e in ref if rng.random() < 0.8]
    est += _random_events(rng, files, classes, 8)
    for kind, fn in (("event", event_based_scores), ("segment", segment_based_scores)):
        s = fn(ref, est, class_names=classes)
        m = _sed_eval_counts(sed_eval, ref, est, classes, kind)
        for i, name in enumerate(classes):
            cw = m.class_wise[name]
            assert (s.n_ref[i], s.n_sys[i], s.n_tp[i]) == (cw["Nref"], cw["Nsys"], cw["Ntp"]), (kind, name)
        assert s.macro_f1 == pytest.approx(m.results_class_wise_average_metrics()["f_measure"]["f_measure"])
        assert s.micro_f1 == pytest.approx(m.results_overall_metrics()["f_measure"]["f_measure"])


def test_unknown_label_is_refused():
    """An estimated label outside the evaluated classes raises a LabelsError naming it."""
    with pytest.raises(LabelsError, match="Cat"):
        event_based_scores(REF, EST, class_names=["Dog", "Speech"])


def test_silent_system_scores_zero_not_nan():
    """A system that outputs nothing gets F1 0 for every class with references."""
    s = event_based_scores(REF, [])
    assert s.f1.tolist() == [0.0, 0.0]
    assert s.macro_f1 == 0.0 and s.micro_f1 == 0.0
