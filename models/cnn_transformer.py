"""CNN-transformer-avg (Kong et al. 2019) for DCASE2017 task 4: 17 classes, frame and clip output.

Facts reproduced from qiuqiangkong/sound_event_detection_dcase2017_task4 (pytorch/models.py,
``Cnn_9layers_Transformer_FrameAvg``): batch norm over the 64 mel bands, four PANNs conv blocks
(64, 128, 256, 512 channels) with 2x2, 2x2, 2x2 and 1x1 average pooling, mean over frequency,
one multi-head self-attention (8 heads, d_k = d_v = 64, d_model 512; output projection, then
ReLU, no residual), a linear layer 512 -> 17 with a sigmoid per frame, clip = mean over frames.
The parameter names equal upstream's, so a checkpoint ``{"model": state_dict}`` of that class
loads as is (its torchlibrosa frontend weights are checked and dropped, as for Cnn14).
No weights were published; without a checkpoint the weights are random.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from calitag.models.cnn14 import (
    ConvBlock,
    check_features,
    fused_copy,
    init_weights,
    load_network_state,
    read_checkpoint,
    strip_frontend,
    to_image,
    upsample_frames,
)
from calitag.models.mixed_precision import cast_body, float32_head
from calitag.models.registry import PANNS_FRONTEND

N_CLASSES = 17
N_MELS = 64
D_MODEL = 512
N_HEADS = 8
D_HEAD = 64  # d_k = d_v
TIME_REDUCTION = 8  # three 2x2 average pools


class MultiHead(nn.Module):
    """Multi-head self-attention as upstream: projections, attention, output layer, ReLU."""

    def __init__(self, *, n_heads: int, d_model: int, d_head: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_head
        self.dropout = dropout
        self.w_qs = nn.Linear(d_model, n_heads * d_head)
        self.w_ks = nn.Linear(d_model, n_heads * d_head)
        self.w_vs = nn.Linear(d_model, n_heads * d_head)
        # Upstream defines a LayerNorm that its forward never applies; it is kept so that the
        # state_dict keys equal the upstream ones.
        self.layer_norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(n_heads * d_head, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = heads(self.w_qs(x)), heads(self.w_ks(x)), heads(self.w_vs(x))
        # softmax(q k^T / sqrt(d_k)) v; upstream's attention dropout is 0.1.
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.1 if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, length, self.n_heads * self.d_head)
        return F.relu(F.dropout(self.fc(out), p=self.dropout, training=self.training))


class CnnTransformer(nn.Module):
    """CNN-transformer-avg: log-Mel (batch, 64, n_frames) -> clip probabilities (batch, 17).

    :meth:`forward_frames` also gives the frame probabilities whose mean is the clip output.
    """

    def __init__(self, *, n_classes: int = N_CLASSES, n_mels: int = N_MELS) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.frame_hop_s = PANNS_FRONTEND.hop_length / PANNS_FRONTEND.sample_rate
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.conv_block1 = ConvBlock(1, 64, pool=(2, 2))
        self.conv_block2 = ConvBlock(64, 128, pool=(2, 2))
        self.conv_block3 = ConvBlock(128, 256, pool=(2, 2))
        self.conv_block4 = ConvBlock(256, 512, pool=(1, 1))
        self.multihead = MultiHead(n_heads=N_HEADS, d_model=D_MODEL, d_head=D_HEAD, dropout=0.2)
        self.fc = nn.Linear(D_MODEL, n_classes)

    def _segments(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, n_frames) -> (batch, n_frames // 8, n_classes) probabilities."""
        check_features(
            features, n_mels=self.n_mels, min_frames=TIME_REDUCTION, model="cnn-transformer"
        )
        x = to_image(self.bn0, features)  # (batch, 1, frames, mels)
        x = x.to(self.conv_block1.conv1.weight.dtype)
        for block in self._body():
            x = block(x)
        with float32_head(x):
            x = self.multihead(x.float().mean(dim=3).transpose(1, 2))  # (batch, segments, 512)
            return torch.sigmoid(self.fc(x))

    def _body(self) -> list[nn.Module]:
        return [self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4]

    def set_body_dtype(self, dtype: torch.dtype) -> None:
        """Run the four conv blocks in ``dtype`` (bfloat16: weights cast, channels-last); bn0,
        the attention and the output layer stay float32."""
        cast_body(self._body(), dtype)

    def inference_copy(
        self, *, dtype: torch.dtype = torch.float32, matmul_widths: Collection[int] | None = None
    ) -> CnnTransformer:
        """A copy that computes the same scores faster, for inference only: the conv blocks'
        batch norms folded into their convolutions, cast to ``dtype``, channels-last (see
        :func:`calitag.models.cnn14.fused_copy`, and its ``matmul_widths``); this model is left as it is."""
        widths = {f"conv_block{i + 1}": self.n_mels >> i for i in range(4)}
        return fused_copy(self, widths, dtype=dtype, matmul_widths=matmul_widths)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Clip probabilities: the mean of the frame probabilities.

        Parameters
        ----------
        features : torch.Tensor
            Log-Mel features, shape (batch, 64, n_frames), n_frames >= 8.

        Returns
        -------
        torch.Tensor
            Probabilities in [0, 1], shape (batch, n_classes).

        Raises
        ------
        AudioError
            If the features do not have 64 mel bands or are shorter than 8 frames.
        """
        return self._segments(features).mean(dim=1)

    def forward_frames(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip and frame probabilities.

        Parameters
        ----------
        features : torch.Tensor
            Log-Mel features, shape (batch, 64, n_frames), n_frames >= 8.

        Returns
        -------
        clip : torch.Tensor
            Shape (batch, n_classes), the mean over the network's 0.08-s segments.
        frames : torch.Tensor
            Shape (batch, n_frames, n_classes), one row per input frame (``frame_hop_s`` =
            0.01 s apart): each segment repeated over its 8 frames as upstream, and the last
            one over the frames after the last whole segment.

        Raises
        ------
        AudioError
            If the features do not fit.
        """
        segments = self._segments(features)
        frames = upsample_frames(segments, ratio=TIME_REDUCTION, n_frames=features.shape[2])
        return segments.mean(dim=1), frames


def _init_attention(attention: MultiHead, generator: torch.Generator) -> None:
    """Upstream's attention initialisation: normal projections, Xavier-normal output layer."""
    d_model = attention.w_qs.in_features
    for layer in (attention.w_qs, attention.w_ks, attention.w_vs):
        std = math.sqrt(2.0 / (d_model + attention.d_head))
        nn.init.normal_(layer.weight, mean=0.0, std=std, generator=generator)
        nn.init.zeros_(layer.bias)
    nn.init.xavier_normal_(attention.fc.weight, generator=generator)
    nn.init.zeros_(attention.fc.bias)


def load(checkpoint: Path | None, *, seed: int = 0) -> CnnTransformer:
    """Build the CNN-transformer in eval mode on the CPU, with a checkpoint's or random weights.

    Parameters
    ----------
    checkpoint : Path or None
        A checkpoint of upstream's ``Cnn_9layers_Transformer_FrameAvg`` (``{"model":
        state_dict}``, torchlibrosa frontend keys allowed); None gives random weights.
    seed : int
        Seed of the ``torch.Generator`` that draws random weights (ignored with a checkpoint).

    Returns
    -------
    CnnTransformer
        The network, in eval mode.

    Raises
    ------
    CheckpointError
        If the checkpoint cannot be read or does not fit (keys, shapes, frontend weights).
    """
    model = CnnTransformer()
    if checkpoint is None:
        generator = torch.Generator().manual_seed(seed)
        init_weights(model, generator)
        _init_attention(model.multihead, generator)
    else:
        state = read_checkpoint(Path(checkpoint))
        state = strip_frontend(state, frontend=PANNS_FRONTEND, source=str(checkpoint))
        load_network_state(model, state, source=str(checkpoint))
    return model.eval()
