"""The post-processing tuner on synthetic frame scores whose best stack is known."""

from __future__ import annotations

import numpy as np
import pytest

from calitag.errors import LabelsError, ScoresError
from calitag.thresholds.events.postprocess import Event, Postprocess, detect_events
from calitag.thresholds.events.event_metrics import event_based_scores
from calitag.pipeline.types import FrameScores
from calitag.thresholds.events.tuning import tune_events
from calitag.models.registry import get_spec

HOP = 0.05  # 20 frames per second
N_FRAMES = 200  # 10-s recordings


def _recordings(seed: int, make_curve, n_files: int = 10, label: str = "Dog"):
    """Frame scores and strong labels: events of 1-2 s at random places, curves drawn by make_curve."""
    rng = np.random.default_rng(seed)
    scores, events = [], []
    for f in range(n_files):
        x = np.zeros(N_FRAMES)
        spans, t = [], int(rng.integers(2, 20))
        while t < N_FRAMES - 45:
            length = int(rng.integers(20, 40))
            spans.append((t, t + length))
            t += length + int(rng.integers(25, 50))
        x = make_curve(rng, spans)
        name = f"rec{f:02d}.wav"
        events += [Event(name, a * HOP, b * HOP, label) for a, b in spans]
        scores.append(FrameScores(x[:, None], HOP, (label,), "synthetic", f"/data/{name}"))
    return scores, events


def _dropouts_and_spikes(width: int):
    """Plateaus at 0.9 with `width`-frame dropouts to 0, background 0 with `width`-frame spikes to 0.9."""

    def make(rng, spans):
        x = np.zeros(N_FRAMES)
        inside = np.zeros(N_FRAMES, dtype=bool)
        for a, b in spans:
            x[a:b] = 0.9
            inside[a:b] = True
            for start in range(a + 4, b - width - 4, 9):  # dropouts well inside the event
                x[start:start + width] = 0.0
        for start in range(6, N_FRAMES - width - 6, 12):  # spikes in the background, off the edges
            if not inside[max(0, start - width - 3):start + 2 * width + 3].any():
                x[start:start + width] = 0.9
        return x + rng.uniform(0, 0.02, N_FRAMES)

    return make


def test_noisy_plateaus_get_a_median_kernel_of_the_known_size():
    """3-frame dropouts and spikes need a median of at least 7 frames; the tuner finds one and scores 1."""
    scores, events = _recordings(0, _dropouts_and_spikes(3))
    result = tune_events(scores, events, smoothing_kinds=("median",), hysteresis=False,
                         min_gaps_s=(0.0,), min_durations_s=(0.0,))
    p = result.postprocess["Dog"]
    assert p.smoothing == "median" and p.kernel_frames >= 7
    assert result.score == pytest.approx(1.0)
    assert result.baseline_score < 0.2
    # Kernels below the known size cannot reach it.
    short = tune_events(scores, events, smoothing_kinds=("median",), kernels_s=(0.1, 0.2),
                        hysteresis=False, min_gaps_s=(0.0,), min_durations_s=(0.0,))
    assert short.score < 0.9


def test_tuned_stack_generalises_to_new_recordings():
    """Parameters tuned on one set of recordings detect the events of another set of the same kind."""
    tune_scores, tune_events_ = _recordings(1, _dropouts_and_spikes(2))
    test_scores, test_events = _recordings(2, _dropouts_and_spikes(2))
    pp = tune_events(tune_scores, tune_events_).postprocess
    detected = [e for fs in test_scores for e in detect_events(fs, pp)]
    assert event_based_scores(test_events, detected).macro_f1 > 0.95
    fixed = [e for fs in test_scores for e in detect_events(fs, Postprocess.uniform(("Dog",)))]
    assert event_based_scores(test_events, fixed).macro_f1 < 0.2


def _plateau_with_peak(rng, spans):
    """Events at 0.45 that reach 0.8 in their middle; a distractor plateau at 0.45 after each never does."""
    x = rng.uniform(0.0, 0.05, N_FRAMES)
    for i, (a, b) in enumerate(spans):
        x[a:b] = 0.45
        mid = (a + b) // 2
        x[mid - 2:mid + 2] = 0.8
        next_start = spans[i + 1][0] if i + 1 < len(spans) else N_FRAMES
        x[b + 5:b + 5 + min(20, next_start - b - 10)] = 0.45
    return x


def test_hysteresis_is_chosen_when_only_it_separates():
    """Events marked by a peak inside a low plateau need hysteresis (low < 0.45 < high < 0.8)."""
    scores, events = _recordings(3, _plateau_with_peak)
    result = tune_events(scores, events, smoothing_kinds=(), min_gaps_s=(0.0,), min_durations_s=(0.0,))
    p = result.postprocess["Dog"]
    assert p.binarize == "hysteresis"
    assert p.low < 0.45 < p.threshold < 0.8
    assert result.score == pytest.approx(1.0)
    no_hyst = tune_events(scores, events, hysteresis=False)  # smoothing and gap rules cannot replace it
    assert no_hyst.score < 0.9


def test_gap_filling_is_tuned_when_smoothing_is_off():
    """Events split by a 5-frame (0.25 s) hole need min_gap >= 0.25 s when no smoothing is allowed."""

    def split(rng, spans):
        x = rng.uniform(0.0, 0.1, N_FRAMES)
        for a, b in spans:
            x[a:b] = 0.8
            x[a + 8:a + 13] = 0.05
        return x

    scores, events = _recordings(4, split)
    result = tune_events(scores, events, smoothing_kinds=(), hysteresis=False)
    p = result.postprocess["Dog"]
    assert p.smoothing == "none" and p.min_gap_s >= 0.25
    assert result.score == pytest.approx(1.0)


@pytest.mark.parametrize("metric", ["event", "segment"])
def test_reported_score_equals_the_reference_metric(metric):
    """The tuner's own F1 of the stack it returns equals the metric recomputed from detected events."""
    from calitag.thresholds.events.event_metrics import segment_based_scores

    def noisy(rng, spans):
        x = np.clip(rng.normal(0.3, 0.2, N_FRAMES), 0, 1)
        for a, b in spans:
            x[a:b] = np.clip(rng.normal(0.55, 0.2, b - a), 0, 1)
        return x

    scores, events = _recordings(8, noisy, n_files=8)
    result = tune_events(scores, events, metric=metric, kernels_s=(0.15, 0.45))
    detected = [e for fs in scores for e in detect_events(fs, result.postprocess)]
    if metric == "event":
        recomputed = event_based_scores(events, detected).macro_f1
    else:
        durations = {fs.source.rsplit("/", 1)[-1]: N_FRAMES * HOP for fs in scores}
        recomputed = segment_based_scores(events, detected, durations_s=durations).macro_f1
    assert 0.3 < result.score < 1.0
    assert result.score == pytest.approx(recomputed, abs=1e-9)


def test_seeded_and_reports_time():
    """The same seed gives the same stack, which smooths away the 2-frame dropouts and spikes that break
    every event at 0.5; the events section records the result's scores and fit seconds."""
    scores, events = _recordings(5, _dropouts_and_spikes(2), n_files=6)
    a = tune_events(scores, events, seed=0)
    b = tune_events(scores, events, seed=0)
    assert a.postprocess.params == b.postprocess.params
    assert a.postprocess.fitted["metric"] == "event_macro_f1" and a.postprocess.frame_hop_s == HOP
    assert a.baseline_score < 0.2 and a.score == pytest.approx(1.0)
    dog = a.postprocess["Dog"]
    assert dog.smoothing != "none" and dog.kernel_frames >= 5  # wider than twice a 2-frame glitch
    fitted = a.postprocess.fitted
    assert a.seconds > 0 and fitted["seconds"] == round(a.seconds, 3)
    assert (fitted["score"], fitted["baseline_score"]) == (round(a.score, 6), round(a.baseline_score, 6))


def test_class_without_reference_keeps_defaults():
    """A class with no reference event is left at its defaults and listed as untuned."""
    scores, events = _recordings(6, _dropouts_and_spikes(2), n_files=4)
    two = [FrameScores(np.c_[fs.probs, np.zeros(len(fs.probs))], HOP, ("Dog", "Cat"), "synthetic", fs.source)
           for fs in scores]
    result = tune_events(two, events, smoothing_kinds=("median",), kernels_s=(0.35,))
    assert result.postprocess.fitted["untuned_classes"] == ["Cat"]
    assert result.postprocess["Cat"] == Postprocess.uniform(("Cat",)).params[0]
    assert np.isnan(result.class_scores["Cat"])


def test_bad_inputs_are_refused():
    """Unknown labels, unscored files and empty input raise clear errors."""
    scores, events = _recordings(7, _dropouts_and_spikes(2), n_files=2)
    with pytest.raises(LabelsError, match="Cat"):
        tune_events(scores, events + [Event("rec00.wav", 1.0, 2.0, "Cat")])
    with pytest.raises(LabelsError, match="nowhere.wav"):
        tune_events(scores, events + [Event("nowhere.wav", 1.0, 2.0, "Dog")])
    with pytest.raises(ScoresError, match="at least one"):
        tune_events([], events)


# --- calitag calibrate-events on the real soundscapes --------------------------------------------

SOUNDSCAPES = __import__("pathlib").Path(__file__).resolve().parent.parent / "audio_samples" / "soundscapes"


def test_calibrate_events_cli_writes_a_loadable_stack(tmp_path):
    """calibrate-events on real soundscapes prints the per-class table and writes a file the event decoder loads."""
    pytest.importorskip("torch", reason="the debug model needs the torch extra")
    from click.testing import CliRunner

    from calitag.cli import main
    from calitag.thresholds.events import load_postprocess, read_events_tsv, write_events_tsv
    from calitag.thresholds.io import Thresholds

    if not (SOUNDSCAPES / "strong_labels_tune.tsv").is_file():
        pytest.skip(f"no soundscapes at {SOUNDSCAPES}: run the audio_samples builder")
    tune = read_events_tsv(SOUNDSCAPES / "strong_labels_tune.tsv")
    speech = tmp_path / "speech_tune.tsv"  # the debug model's classes include Speech, not Alarm_bell_ringing
    write_events_tsv(speech, [e for e in tune.events if e.label == "Speech"], files=tune.files)
    out = tmp_path / "th.json"
    result = CliRunner().invoke(main, [
        "calibrate-events", str(SOUNDSCAPES), "--events", str(speech), "--model", "debug", "--out", str(out),
        "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "event-based macro-F1 on 4 file(s)" in result.output
    assert any(line.split()[:1] == ["Speech"] for line in result.output.splitlines())
    saved = Thresholds.load(out, expected_model="debug")
    assert saved.events is not None and saved.events.fitted["metric"] == "event_macro_f1"
    tuned = load_postprocess(out, class_names=get_spec("debug").class_names, expected_model="debug")
    assert tuned.class_names == get_spec("debug").class_names


@pytest.mark.torch
def test_calibrate_events_cli_beats_fixed_threshold_on_held_out(shared, tmp_path):
    """Tuned on the tuning soundscapes, the stack beats threshold 0.5 on the held-out ones (CRNN, real audio)."""
    from click.testing import CliRunner

    from calitag.cli import main
    from calitag.thresholds.events import load_postprocess, read_events_tsv
    from calitag.pipeline.tagger import Tagger
    from calitag.thresholds.io import Thresholds

    if not (SOUNDSCAPES / "strong_labels_tune.tsv").is_file():
        pytest.skip(f"no soundscapes at {SOUNDSCAPES}: run the audio_samples builder")
    checkpoint = shared / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.h5"
    out = tmp_path / "th.json"
    result = CliRunner().invoke(main, [
        "calibrate-events", str(SOUNDSCAPES), "--events", str(SOUNDSCAPES / "strong_labels_tune.tsv"),
        "--model", "crnn-dcase2019", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "event-based macro-F1" in result.output
    saved = Thresholds.load(out, expected_model="crnn-dcase2019")
    assert saved.events is not None and saved.events.fitted["metric"] == "event_macro_f1"

    tagger = Tagger.load("crnn-dcase2019", checkpoint=checkpoint, device="cpu")
    held = read_events_tsv(SOUNDSCAPES / "strong_labels_heldout.tsv")
    scores = [tagger.frame_scores(SOUNDSCAPES / f) for f in held.files]
    tuned = load_postprocess(out, class_names=tagger.class_names, expected_model="crnn-dcase2019")

    def macro_f1(pp):
        detected = [e for fs in scores for e in detect_events(fs, pp)]
        return event_based_scores(held.events, detected, class_names=tagger.class_names).macro_f1

    assert macro_f1(tuned) > macro_f1(Postprocess.uniform(tagger.class_names)) + 0.2
