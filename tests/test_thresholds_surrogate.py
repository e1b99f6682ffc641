"""The surrogate step and the threshold layer (calitag.thresholds.surrogate)."""

from __future__ import annotations

import pytest
torch = pytest.importorskip("torch", reason="the torch models need the torch extra")  # noqa: E402

from calitag.errors import CalibrationError, ScoresError
from calitag.thresholds import ThresholdLayer, surrogate_step


def _relaxation(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(slope * x)


def test_forward_is_strict_step():
    """The forward pass is exactly 1 where x > 0 and 0 elsewhere, including x == 0."""
    x = torch.tensor([-1.0, -1e-6, 0.0, 1e-6, 2.0])
    assert surrogate_step(x, 50.0).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("slope_value", [5.0, 50.0, 200.0])
def test_input_gradient_matches_finite_differences_of_sigmoid(slope_value):
    """d step / dx equals the central finite difference of sigmoid(a x), for several slopes."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(64, generator=gen, dtype=torch.float64) - 0.5) * 0.4
    x.requires_grad_(True)
    slope = torch.tensor(slope_value, dtype=torch.float64)
    surrogate_step(x, slope).sum().backward()
    h = 1e-6
    with torch.no_grad():
        numeric = (_relaxation(x + h, slope) - _relaxation(x - h, slope)) / (2 * h)
    torch.testing.assert_close(x.grad, numeric, rtol=1e-6, atol=1e-8)


def test_slope_gradient_matches_finite_differences_and_sums_over_batch():
    """A per-class slope gets d sigmoid(a x)/da summed over the batch axis."""
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(32, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.2
    slope = torch.tensor([10.0, 50.0, 80.0], dtype=torch.float64, requires_grad=True)
    surrogate_step(x, slope).sum().backward()
    h = 1e-5
    with torch.no_grad():
        numeric = ((_relaxation(x, slope + h) - _relaxation(x, slope - h)) / (2 * h)).sum(0)
    torch.testing.assert_close(slope.grad, numeric, rtol=1e-6, atol=1e-9)


def test_gradient_is_finite_far_from_threshold():
    """Very large |a x| gives a zero, not NaN, gradient."""
    x = torch.tensor([-1e4, 1e4, 0.0], requires_grad=True)
    surrogate_step(x, 500.0).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0] == 0 and x.grad[1] == 0 and x.grad[2] == pytest.approx(125.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_any_batch_shape_and_dtype(dtype):
    """The layer thresholds (batch, time, classes) inputs and keeps the dtype; thresholds get gradients."""
    layer = ThresholdLayer(4, init=[0.1, 0.3, 0.5, 0.7], slope=20.0, dtype=dtype)
    gen = torch.Generator().manual_seed(2)
    scores = torch.rand(2, 5, 4, generator=gen, dtype=dtype)
    out = layer(scores)
    assert out.shape == scores.shape and out.dtype == dtype
    assert torch.equal(out.bool(), scores > layer.thresholds.detach())
    out.sum().backward()
    assert layer.thresholds.grad.shape == (4,)
    assert (layer.thresholds.grad < 0).all()  # raising a threshold removes positives
    assert layer.slope.grad is None


def test_layer_learnable_slope_and_clamp():
    """With learn_slope the slope receives a gradient; clamp_ keeps thresholds in [0, 1]."""
    layer = ThresholdLayer(3, init=0.5, learn_slope=True)
    layer(torch.tensor([[0.49, 0.5, 0.52]])).sum().backward()
    assert layer.slope.grad is not None and torch.isfinite(layer.slope.grad).all()
    with torch.no_grad():
        layer.thresholds.copy_(torch.tensor([-0.2, 0.4, 1.3]))
    layer.clamp_()
    assert layer.thresholds.tolist() == pytest.approx([0.0, 0.4, 1.0])


def test_layer_rejects_wrong_class_count_and_bad_options():
    """Scores with another class count, a bad init length or a non-positive slope raise clear errors."""
    layer = ThresholdLayer(3)
    with pytest.raises(ScoresError, match="3 classes"):
        layer(torch.rand(2, 4))
    with pytest.raises(CalibrationError, match="init has 2 values"):
        ThresholdLayer(3, init=[0.1, 0.2])
    with pytest.raises(CalibrationError, match="slope"):
        ThresholdLayer(3, slope=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_layer_on_cuda_matches_cpu():
    """On CUDA the decisions and threshold gradients equal the CPU ones."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(16, 5, generator=gen)
    grads = []
    for device in ("cpu", "cuda"):
        layer = ThresholdLayer(5, init=0.4, device=device)
        layer(scores.to(device)).sum().backward()
        grads.append(layer.thresholds.grad.cpu())
    torch.testing.assert_close(grads[0], grads[1])
