"""Certified precision/recall targets: parsing, Clopper–Pearson bounds, the fixed sequence, fit and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from calitag.cli import main
from calitag.errors import CalibrationError
from calitag.thresholds import Thresholds, fit
from calitag.thresholds.targets import (
    Target,
    achieved,
    certify_class,
    lower_bound,
    read_targets,
    resolve_targets,
)


def _separable(n_neg: int = 400, n_pos: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One class: positives score high (a few low), negatives low (a few high); (scores, bool labels)."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.beta(5, 2, n_pos), rng.beta(2, 6, n_neg)])
    return scores, np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)])


def test_target_parses_metric_and_value_and_refuses_bad_ones():
    """'precision=0.9' parses; an unknown metric, a value outside (0, 1) or no '=' is refused with the form."""
    assert Target.parse("precision=0.9") == Target("precision", 0.9)
    assert str(Target.parse(" Recall=0.8")) == "recall=0.8"
    for bad in ("precision", "f1=0.5", "precision=1.5", "recall=0", "precision=abc"):
        with pytest.raises(CalibrationError, match="precision|recall|METRIC=VALUE"):
            Target.parse(bad)


def test_targets_file_gives_per_class_targets_and_names_bad_rows(tmp_path):
    """A class,metric,value CSV (header optional) sets targets per class; an unknown class names its row."""
    path = tmp_path / "targets.csv"
    path.write_text("class,metric,value\nDog,precision,0.9\nCat,recall,0.7\n")
    assert read_targets(path, ["Dog", "Cat", "Bird"]) == {"Dog": Target("precision", 0.9),
                                                          "Cat": Target("recall", 0.7)}
    assert resolve_targets(str(path), ["Dog", "Cat", "Bird"]) == [Target("precision", 0.9), Target("recall", 0.7),
                                                                 None]
    path.write_text("Dog,precision,0.9\nCow,recall,0.7\n")
    with pytest.raises(CalibrationError, match="row 2.*Cow"):
        read_targets(path, ["Dog", "Cat"])


def test_lower_bound_is_the_one_sided_clopper_pearson_bound():
    """The bound equals scipy's exact interval at twice the error, and delta**(1/k) with k successes in k."""
    for k, n in ((14, 14), (27, 30), (5, 40)):
        expected = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact").low
        assert lower_bound(np.array([k]), np.array([n]), confidence=0.95)[0] == pytest.approx(expected, rel=1e-9)
    assert lower_bound(np.array([14]), np.array([14]), confidence=0.95)[0] == pytest.approx(0.05 ** (1 / 14))
    assert lower_bound(np.array([0]), np.array([10]), confidence=0.95)[0] == 0.0


def test_precision_target_is_certified_with_the_loosest_passing_threshold():
    """A certified threshold's precision bound reaches the target and one cut looser it does not."""
    scores, truth = _separable()
    outcome = certify_class(scores, truth, Target("precision", 0.8), confidence=0.95)
    assert outcome.certified and outcome.best_level >= 0.8
    decided = scores > outcome.threshold
    tp, pp = int((decided & truth).sum()), int(decided.sum())
    assert lower_bound(np.array([tp]), np.array([pp]), confidence=0.95)[0] >= 0.8
    looser = np.sort(scores[scores < outcome.threshold])[-1] - 1e-9  # one more clip predicted
    decided = scores > looser
    assert lower_bound(np.array([(decided & truth).sum()]), np.array([decided.sum()]), confidence=0.95)[0] < 0.8


def test_recall_target_keeps_recall_and_best_level_is_the_bound_of_all_positives():
    """A recall target keeps the certified recall on the fitting clips; the best level is delta**(1/n_pos)."""
    scores, truth = _separable(n_pos=80)
    outcome = certify_class(scores, truth, Target("recall", 0.8), confidence=0.95)
    assert outcome.certified
    recall = (scores[truth] > outcome.threshold).mean()
    assert recall >= 0.8
    assert outcome.best_level == pytest.approx(0.05 ** (1 / 80))


def test_class_with_few_positives_is_not_certified_and_keeps_its_fit():
    """Three perfect positives cannot certify precision 0.8 at 0.95: certified false, best level < 0.8, F1 threshold kept."""
    rng = np.random.default_rng(1)
    scores = np.stack([rng.random(200), rng.random(200)], axis=1) * 0.5
    labels = np.zeros((200, 2), np.uint8)
    labels[:3, 0] = 1
    scores[:3, 0] = [0.9, 0.92, 0.95]  # separable, but three clips prove little
    labels[:, 1] = scores[:, 1] > 0.3
    plain = fit(scores, labels, method="exact", objective="macro_f1")
    th = fit(scores, labels, method="exact", objective="macro_f1", target="precision=0.8", class_names=("few", "many"))
    assert th.per_class["certified"] == [False, True]
    assert th.per_class["best_level"][0] == pytest.approx(0.05 ** (1 / 3))
    assert th.values[0] == plain.values[0] and th.per_class["kept"][0] == "fit"
    assert "not certified" in th.per_class["reason"][0]
    assert th.uncertified == ("few",) and th.per_class["kept"][1] == "target"
    assert th.options["target"] == ["precision=0.8"] and th.options["confidence"] == 0.95


def test_targets_round_trip_through_the_thresholds_file(tmp_path):
    """certified, best_level and target survive save/load; a half-written target record is refused."""
    scores, truth = _separable()
    th = fit(np.stack([scores, scores[::-1]], 1), np.stack([truth, truth[::-1]], 1), target="precision=0.9")
    loaded = Thresholds.load(th.save(tmp_path / "th.json"))
    assert loaded.per_class == th.per_class
    document = json.loads((tmp_path / "th.json").read_text())
    del document["per_class"]["best_level"]
    with pytest.raises(Exception, match="all of target, certified, best_level"):
        Thresholds.from_dict(document)


def test_achieved_gives_exact_intervals_around_the_held_out_rates():
    """Held-out precision and recall come with exact two-sided intervals that contain them."""
    decided = np.array([[1], [1], [1], [0], [0]], bool)
    truth = np.array([[1], [1], [0], [1], [0]], bool)
    out = achieved(decided, truth)
    assert out["precision"] == [pytest.approx(2 / 3)] and out["recall"] == [pytest.approx(2 / 3)]
    low, high = out["precision_interval"][0]
    assert 0 < low < 2 / 3 < high < 1


def _pooled_split(shared, seed: int, folder):
    with np.load(shared / "data" / "dcase2017_task4.npz") as d:
        scores = np.concatenate([d["val_scores"], d["eval_scores"]])
        labels = np.concatenate([d["val_labels"], d["eval_labels"]]) > 0
    order = np.random.default_rng(seed).permutation(len(scores))
    a, b = order[: len(order) // 2], order[len(order) // 2:]
    path = folder / f"split_{seed}.npz"
    np.savez(path, val_scores=scores[a], val_labels=labels[a].astype(np.uint8), eval_scores=scores[b],
             eval_labels=labels[b].astype(np.uint8))
    return path, scores[b], labels[b]


def test_cli_precision_target_holds_on_fresh_dcase2017_halves(shared, tmp_path):
    """`thresholds fit SPLIT.npz --target precision=0.8` certifies >= 25% of pairs; >= 90% of those keep P >= 0.75."""
    certified_pairs = kept_pairs = pairs = 0
    for seed in range(8):
        path, scores, labels = _pooled_split(shared, seed, tmp_path)
        out = tmp_path / "th.json"
        result = CliRunner().invoke(main, ["thresholds", "fit", str(path), "--target", "precision=0.8",
                                           "--out", str(out), "--force"])
        assert result.exit_code == 0, result.output
        document = json.loads(out.read_text())
        certified = np.array(document["per_class"]["certified"], bool)
        decided = scores > np.array(document["thresholds"])
        precision = np.where(decided.sum(0) > 0, (decided & labels).sum(0) / np.maximum(decided.sum(0), 1), 1.0)
        pairs += certified.size
        certified_pairs += certified.sum()
        kept_pairs += (certified & (precision >= 0.75)).sum()
    assert certified_pairs / pairs >= 0.25
    assert kept_pairs / certified_pairs >= 0.90


def test_cli_reads_a_targets_file_and_prints_the_certification(tmp_path):
    """--target FILE.csv applies per class; the text output lists each target with yes/NO and its best level."""
    from calitag.thresholds import synthetic_scores

    scores, labels = synthetic_scores(800, 3, seed=3)
    path = tmp_path / "s.npz"
    np.savez(path, val_scores=scores, val_labels=labels, classes=np.array(["a", "b", "c"]))
    targets = tmp_path / "targets.csv"
    targets.write_text("a,precision,0.6\nc,recall,0.999\n")
    result = CliRunner().invoke(main, ["thresholds", "fit", str(path), "--target", str(targets), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["target"] == {"a": "precision=0.6", "b": None, "c": "recall=0.999"}
    assert summary["certified"]["b"] is None and summary["certified"]["c"] is False
    text = CliRunner().invoke(main, ["thresholds", "fit", str(path), "--target", str(targets)])
    assert "recall=0.999" in text.stdout and " NO " in text.stdout and "not certified" in text.stdout
    bad = CliRunner().invoke(main, ["thresholds", "fit", str(path), "--target", "precision=2"])
    assert bad.exit_code == 1 and "between 0 and 1" in bad.output
