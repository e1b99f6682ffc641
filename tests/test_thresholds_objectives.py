"""Differentiable objectives over binarised outputs (calitag.thresholds.objectives)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the autograd objectives: the torch extra
from sklearn.metrics import f1_score, fbeta_score

from calitag.errors import CalibrationError
from calitag.thresholds import (
    ThresholdLayer,
    macro_f1,
    macro_fbeta,
    micro_f1,
    micro_fbeta,
    objective_value,
    resolve_objective,
)


@pytest.fixture(scope="module")
def decisions():
    """Binary decisions and labels with one class never predicted and one never positive."""
    rng = np.random.default_rng(0)
    pred = rng.random((200, 6)) < 0.3
    truth = rng.random((200, 6)) < 0.25
    pred[:, 4] = False
    truth[:, 5] = False
    return pred, truth


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_f1_matches_sklearn(decisions, average):
    """micro_f1/macro_f1 equal scikit-learn's f1_score (zero_division=0)."""
    pred, truth = decisions
    fn = micro_f1 if average == "micro" else macro_f1
    ours = fn(torch.tensor(pred, dtype=torch.float64), torch.tensor(truth, dtype=torch.float64))
    assert float(ours) == pytest.approx(f1_score(truth, pred, average=average, zero_division=0), abs=1e-12)


@pytest.mark.parametrize("beta", [0.5, 2.0])
@pytest.mark.parametrize("average", ["micro", "macro"])
def test_fbeta_matches_sklearn(decisions, beta, average):
    """micro_fbeta/macro_fbeta equal scikit-learn's fbeta_score."""
    pred, truth = decisions
    fn = micro_fbeta if average == "micro" else macro_fbeta
    ours = fn(torch.tensor(pred, dtype=torch.float64), torch.tensor(truth, dtype=torch.float64), beta=beta)
    expected = fbeta_score(truth, pred, beta=beta, average=average, zero_division=0)
    assert float(ours) == pytest.approx(expected, abs=1e-12)


def test_objective_counts_over_every_leading_axis(decisions):
    """A (batch, frames, classes) tensor scores like its (batch*frames, classes) reshape."""
    pred, truth = decisions
    p = torch.tensor(pred, dtype=torch.float32)
    t = torch.tensor(truth, dtype=torch.float32)
    flat = objective_value(p, t, "macro_f1")
    folded = objective_value(p.reshape(20, 10, 6), t.reshape(20, 10, 6), "macro-f1")
    assert float(flat) == pytest.approx(float(folded))


def test_gradient_flows_to_thresholds_and_has_no_nan():
    """Through the layer, micro-F1 gives finite threshold gradients even for an all-negative class."""
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 3, generator=gen)
    labels = (torch.rand(50, 3, generator=gen) < 0.3).float()
    labels[:, 2] = 0
    layer = ThresholdLayer(3, init=0.5, slope=10.0)
    (-macro_f1(layer(scores), labels)).backward()
    assert torch.isfinite(layer.thresholds.grad).all()
    assert layer.thresholds.grad.abs().sum() > 0


def test_resolve_objective_names_and_errors():
    """Hyphenated names resolve; unknown names and misplaced beta raise CalibrationError."""
    assert resolve_objective("Micro-F1").name == "micro_f1"
    spec = resolve_objective("macro_fbeta", beta=0.5)
    assert (spec.average, spec.beta, spec.label) == ("macro", 0.5, "macro_f0.5")
    with pytest.raises(CalibrationError, match="unknown objective"):
        resolve_objective("accuracy")
    with pytest.raises(CalibrationError, match="beta 1"):
        resolve_objective("micro_f1", beta=2.0)
    with pytest.raises(CalibrationError, match="beta must be"):
        resolve_objective("micro_fbeta", beta=-1.0)
