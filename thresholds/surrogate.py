"""The surrogate-gradient step: a hard decision forward, a sigmoid's derivative backward.

SGL-Thresh (Pellegrini & Masquelier, ICASSP 2021) learns decision thresholds by gradient
descent through ``step(score - threshold)``. The step has a zero gradient almost everywhere, so
the backward pass uses the derivative of ``sigmoid(slope * x)`` instead:

    d/dx     sigmoid(a x) = a * sigmoid(a x) * sigmoid(-a x)
    d/da     sigmoid(a x) = x * sigmoid(a x) * sigmoid(-a x)

The forward output stays exactly binary (strict ``score > threshold``), so the objective seen
during training is the one measured at test time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from calitag.errors import CalibrationError, ScoresError


def _sum_to_shape(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to the shape of the input it came from."""
    if grad.shape == shape:
        return grad
    n_lead = grad.dim() - len(shape)
    if n_lead > 0:
        grad = grad.sum(dim=tuple(range(n_lead)))
    keep = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    if keep:
        grad = grad.sum(dim=keep, keepdim=True)
    return grad


class SurrogateStep(torch.autograd.Function):
    """Heaviside step of ``x`` (strict ``x > 0``) with a sigmoid surrogate gradient of slope ``a``.

    ``slope`` broadcasts against ``x`` (a scalar tensor, or one value per class on the last axis);
    it receives a gradient when it requires one.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, slope)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        x, slope = ctx.saved_tensors
        ax = slope * x
        # sigmoid(ax) * sigmoid(-ax), written so that it never overflows for large |ax|.
        bump = torch.sigmoid(ax) * torch.sigmoid(-ax)
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_output * slope * bump
        if ctx.needs_input_grad[1]:
            grad_y = _sum_to_shape(grad_output * x * bump, slope.shape)
        return grad_x, grad_y


def surrogate_step(x: torch.Tensor, slope: float | torch.Tensor = 50.0) -> torch.Tensor:
    """Binarise ``x > 0`` with a sigmoid surrogate gradient.

    Parameters
    ----------
    x : torch.Tensor
        Any shape, floating point (typically ``scores - thresholds``).
    slope : float or torch.Tensor
        Slope ``a`` of the surrogate sigmoid; a tensor broadcastable to ``x`` (e.g. one value per
        class on the last axis) receives a gradient when it requires one.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``, values 0 or 1.
    """
    if not torch.is_floating_point(x):
        raise ScoresError(f"surrogate_step expects a floating-point tensor, got {x.dtype}")
    if not isinstance(slope, torch.Tensor):
        slope = torch.tensor(float(slope), dtype=x.dtype, device=x.device)
    return SurrogateStep.apply(x, slope)


class ThresholdLayer(nn.Module):
    """Per-class decision thresholds that can sit behind any tagger and be trained end to end.

    Maps scores of shape ``(..., n_classes)`` to binary decisions of the same shape, with the
    surrogate gradient flowing to the thresholds (and to the slope when ``learn_slope``).

    Parameters
    ----------
    n_classes : int
        Number of classes (size of the last axis of the input).
    init : float or sequence of float
        Initial threshold(s): one value for all classes, or one per class.
    slope : float
        Initial slope ``a`` of the surrogate sigmoid (one per class).
    learn_slope : bool
        Whether the slope is a trainable parameter too.
    device, dtype
        Where the parameters live; they follow ``.to()`` like any module.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        init: float | Sequence[float] = 0.5,
        slope: float = 50.0,
        learn_slope: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if n_classes < 1:
            raise CalibrationError(f"ThresholdLayer needs at least one class, got n_classes={n_classes}")
        if slope <= 0:
            raise CalibrationError(f"the surrogate slope must be > 0, got {slope}")
        values = torch.as_tensor(init, dtype=dtype, device=device).flatten()
        if values.numel() == 1:
            values = values.expand(n_classes)
        if values.numel() != n_classes:
            raise CalibrationError(f"init has {values.numel()} values, expected 1 or n_classes={n_classes}")
        self.thresholds = nn.Parameter(values.clone())
        self.slope = nn.Parameter(
            torch.full((n_classes,), float(slope), dtype=dtype, device=device), requires_grad=learn_slope
        )

    @property
    def n_classes(self) -> int:
        return self.thresholds.numel()

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """Binary decisions ``scores > thresholds``, shape ``(..., n_classes)``."""
        if scores.shape[-1:] != (self.n_classes,):
            raise ScoresError(
                f"ThresholdLayer expects scores with {self.n_classes} classes on the last axis, "
                f"got shape {tuple(scores.shape)}"
            )
        return SurrogateStep.apply(scores - self.thresholds, self.slope)

    @torch.no_grad()
    def clamp_(self, low: float = 0.0, high: float = 1.0) -> ThresholdLayer:
        """Keep every threshold inside ``[low, high]`` (call after each optimiser step)."""
        self.thresholds.clamp_(low, high)
        return self

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, learn_slope={self.slope.requires_grad}"
