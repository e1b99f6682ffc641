"""PANNs Cnn14 (Kong et al. 2020) on log-Mel features, clip-level or decision-level (frames).

The module takes the log-Mel features of :class:`calitag.models.torch_frontend.LogMel` with the
``cnn14`` frontend (32 kHz, window 1024, hop 320, 64 mels, 50-14000 Hz) and returns clip
probabilities over the 527 AudioSet classes. Its parameter names and shapes are those of
``Cnn14`` in qiuqiangkong/audioset_tagging_cnn (pytorch/models.py), so the published
``Cnn14_mAP=0.431.pth`` loads unchanged from ``checkpoint["model"]``; ``decision_level=True``
gives ``Cnn14_DecisionLevelMax`` (same parameters, its own checkpoint), whose clip output is the
maximum over its segment outputs and whose frames come back at the input frame rate.

Upstream checkpoints also carry their frontend as weights (``spectrogram_extractor.*``: the
windowed DFT as Conv1d kernels; ``logmel_extractor.melW``: the mel matrix). :func:`load` checks
them against the frontend calitag computes with ``torch.stft`` and drops them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Collection, Mapping
from pathlib import Path

import librosa
import torch
import torch.nn.functional as F
from torch import nn

from calitag.errors import AudioError, CheckpointError
from calitag.models.frontend import analysis_window, mel_filters
from calitag.models.mixed_precision import cast_body, float32_head
from calitag.models.registry import PANNS_FRONTEND, FrontendConfig

N_CLASSES = 527
N_MELS = 64
EMBEDDING_SIZE = 2048
TIME_REDUCTION = 32  # five 2x2 average pools halve the time axis five times
FRONTEND_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)
FRONTEND_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and ReLU, then average pooling (PANNs ConvBlock)."""

    def __init__(self, in_channels: int, out_channels: int, *, pool: tuple[int, int]) -> None:
        super().__init__()
        self.pool = pool
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        x = F.relu_(self.bn2(self.conv2(x)))
        if self.pool != (1, 1):
            x = F.avg_pool2d(x, kernel_size=self.pool)
        return x


#: Maps up to this wide (Cnn14's last three blocks: 8, 4 and 2 mel bins) may run their 3x3
#: convolutions as one matrix product: convolution kernels block the map's width, and at width 2
#: oneDNN's reached half the rate of a matmul of the same work (fp32, 2048 -> 2048 channels, AMD EPYC
#: AVX2), but at widths 4 and 8 the convolution was faster there. :func:`matmul_pays` measures it.
PROBE_MAX_WIDTH = 8
#: :func:`matmul_pays` times a map of one 10-s clip (1001 frames x 64 mels, halved with each block).
PROBE_FRAMES = 1001
_MATMUL_PAYS: dict[tuple, bool] = {}  # measured once per process: shape, dtype, width, threads


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution that computes ``bn(conv(x))`` in eval mode.

    The scale is computed in float64, the product in float32 (one rounding of 2**-24: nothing
    beside bfloat16's 2**-9, which a later cast adds once per folded weight).

    Parameters
    ----------
    conv : nn.Conv2d
        A convolution without bias.
    bn : nn.BatchNorm2d
        The batch norm after it (running statistics).

    Returns
    -------
    weight, bias : torch.Tensor
        float32, shapes of ``conv.weight`` and (out_channels,).
    """
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.float() * scale.float().view(-1, 1, 1, 1)
    return weight, (bn.bias.double() - bn.running_mean.double() * scale).float()


class FusedConv3x3(nn.Module):
    """A 3x3 convolution (padding 1) with its batch norm folded in, then ReLU: inference only.

    The weight lives in ``dtype``, laid out channels-last (oneDNN's fastest layout for these
    convolutions, in float32 and bfloat16). With ``as_matmul`` the convolution runs as one matrix
    product of the 3x3 neighbourhoods (batch x height x width, 9 x in_channels) with the weight
    seen as the (out_channels, 9 x in_channels) matrix it is in memory: for narrow maps where that
    is faster (:func:`matmul_pays`), and for one input channel, where a convolution kernel has
    almost nothing to vectorise over (2x faster there, fp32, AVX2).
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, *, dtype: torch.dtype, as_matmul: bool = False) -> None:
        super().__init__()
        weight, bias = fold_batch_norm(conv, bn)
        self.as_matmul = as_matmul
        self.register_buffer("weight", weight.to(dtype).contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.as_matmul:
            return F.relu_(F.conv2d(x, self.weight, self.bias, padding=1))
        batch, channels, height, width = x.shape
        padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (batch, height + 2, width + 2, channels)
        # columns ordered (kernel row, kernel column, input channel), as the channels-last weight is
        columns = torch.cat(
            [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)], dim=3
        )
        matrix = self.weight.permute(0, 2, 3, 1).reshape(self.weight.shape[0], -1)  # a view
        out = torch.addmm(self.bias, columns.view(-1, 9 * channels), matrix.t())
        # (batch, height, width, out) seen as a channels-last (batch, out, height, width)
        return F.relu_(out).view(batch, height, width, -1).permute(0, 3, 1, 2)


def matmul_pays(conv: FusedConv3x3, *, width: int) -> bool:
    """Whether ``conv`` runs faster as a matrix product than as a convolution on maps ``width`` wide,
    on this machine with torch's current thread count.

    Measured once per process for each weight shape, dtype, width and thread count on the map a 10-s
    clip gives at that width (:data:`PROBE_FRAMES` x 64 mels, both halved per block; 4.7 GFLOP for each
    of Cnn14's last three blocks), channels-last: each form run once to warm up, then best of 2,
    alternating. The answer changes the speed, not the scores.
    """
    key = (tuple(conv.weight.shape), conv.weight.dtype, width, torch.get_num_threads())
    if key not in _MATMUL_PAYS:
        shape = (1, conv.weight.shape[1], max(1, PROBE_FRAMES * width // N_MELS), width)
        x = torch.full(shape, 0.01, dtype=conv.weight.dtype).contiguous(memory_format=torch.channels_last)
        best = {False: math.inf, True: math.inf}
        with torch.inference_mode():
            for round_ in range(3):
                for as_matmul in best:
                    conv.as_matmul = as_matmul
                    start = time.perf_counter()
                    conv(x)
                    if round_:
                        best[as_matmul] = min(best[as_matmul], time.perf_counter() - start)
        conv.as_matmul = False
        _MATMUL_PAYS[key] = best[True] < best[False]
    return _MATMUL_PAYS[key]


class FusedConvBlock(nn.Module):
    """:class:`ConvBlock` for inference: two :class:`FusedConv3x3`, then the same average pooling.

    Parameters
    ----------
    block : ConvBlock
        The block whose weights and batch-norm statistics are folded (left unchanged).
    width : int
        Width (mel bins) of the maps the block sees.
    dtype : torch.dtype
        float32 or bfloat16.
    as_matmul : bool or None
        Run both convolutions as matrix products; None: where :func:`matmul_pays` for the second one
        (maps up to :data:`PROBE_MAX_WIDTH` wide; wider ones run as convolutions). A first convolution
        with one input channel always runs as a matrix product.
    """

    def __init__(self, block: ConvBlock, *, width: int, dtype: torch.dtype, as_matmul: bool | None = None) -> None:
        super().__init__()
        self.pool = block.pool
        self.conv1 = FusedConv3x3(block.conv1, block.bn1, dtype=dtype)
        self.conv2 = FusedConv3x3(block.conv2, block.bn2, dtype=dtype)
        if as_matmul is None:
            as_matmul = width <= PROBE_MAX_WIDTH and matmul_pays(self.conv2, width=width)
        self.conv1.as_matmul = as_matmul or block.conv1.in_channels == 1
        self.conv2.as_matmul = as_matmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        if self.pool != (1, 1):
            x = F.avg_pool2d(x, kernel_size=self.pool)
        return x


def fused_copy(
    model: nn.Module, widths: Mapping[str, int], *, dtype: torch.dtype,
    matmul_widths: Collection[int] | None = None,
) -> nn.Module:
    """A copy of ``model`` for inference whose conv blocks are :class:`FusedConvBlock`.

    The copy shares nothing with ``model``, whose parameters and state_dict keys stay those of
    the checkpoint; the copy's body weights are folded, cast to ``dtype`` and laid out for speed.

    Parameters
    ----------
    model : nn.Module
        Cnn14 or the CNN-transformer, in eval mode.
    widths : Mapping
        Attribute name of each :class:`ConvBlock` -> width of the maps it sees.
    dtype : torch.dtype
        The body's dtype in the copy.
    matmul_widths : collection of int or None
        Map widths whose blocks run their convolutions as matrix products; None: measured on this
        machine (:func:`matmul_pays`).

    Returns
    -------
    nn.Module
        Same class as ``model``, in eval mode.
    """
    blocks = {name: getattr(model, name) for name in widths}
    # The memo maps each block to None, so deepcopy skips their weights (replaced right after).
    twin = copy.deepcopy(model, {id(block): None for block in blocks.values()})
    for name, block in blocks.items():
        as_matmul = None if matmul_widths is None else widths[name] in matmul_widths
        setattr(twin, name, FusedConvBlock(block, width=widths[name], dtype=dtype, as_matmul=as_matmul))
    return twin.eval()


def check_features(features: torch.Tensor, *, n_mels: int, min_frames: int, model: str) -> None:
    """Raise AudioError unless ``features`` is (batch, n_mels, n_frames >= min_frames).

    Parameters
    ----------
    features : torch.Tensor
        Log-Mel features, shape (batch, n_mels, n_frames).
    n_mels : int
        Mel bands the network was built for.
    min_frames : int
        Fewest frames the network's pooling can reduce to one time step.
    model : str
        Model name for the message.

    Raises
    ------
    AudioError
        If the rank, the number of mel bands or the number of frames does not fit.
    """
    if features.dim() != 3 or features.shape[1] != n_mels:
        raise AudioError(
            f"{model} expects log-Mel features of shape (batch, {n_mels}, n_frames), "
            f"got {tuple(features.shape)}; compute them with LogMel(MODELS[{model!r}].frontend)"
        )
    if features.shape[2] < min_frames:
        raise AudioError(
            f"{model} needs at least {min_frames} frames, got {features.shape[2]}; "
            "pad short recordings before the frontend"
        )


def to_image(bn0: nn.BatchNorm2d, features: torch.Tensor) -> torch.Tensor:
    """Normalise each mel band with ``bn0`` and lay the features out as the image
    (batch, 1, n_frames, n_mels) that the convolutions see upstream.

    Parameters
    ----------
    bn0 : nn.BatchNorm2d
        Batch norm over the mel bands (upstream applies it to (batch, mels, frames, 1)).
    features : torch.Tensor
        Shape (batch, n_mels, n_frames).

    Returns
    -------
    torch.Tensor
        Shape (batch, 1, n_frames, n_mels), contiguous.
    """
    # contiguous(): a permuted view looks channels-last to the CPU convolution, which then
    # runs about twice as slowly.
    return bn0(features.unsqueeze(-1)).permute(0, 3, 2, 1).contiguous()


def upsample_frames(segments: torch.Tensor, *, ratio: int, n_frames: int) -> torch.Tensor:
    """Repeat each segment ``ratio`` times and pad with the last one up to ``n_frames``.

    This is the PANNs nearest-neighbour interpolation back to the input frame rate.

    Parameters
    ----------
    segments : torch.Tensor
        Segment outputs, shape (batch, n_segments, n_classes), ``n_segments * ratio <= n_frames``.
    ratio : int
        Input frames per segment.
    n_frames : int
        Number of input frames.

    Returns
    -------
    torch.Tensor
        Frame outputs, shape (batch, n_frames, n_classes).
    """
    frames = segments.repeat_interleave(ratio, dim=1)
    missing = n_frames - frames.shape[1]
    if missing > 0:
        frames = torch.cat([frames, frames[:, -1:].expand(-1, missing, -1)], dim=1)
    return frames


class Cnn14(nn.Module):
    """PANNs Cnn14: log-Mel (batch, 64, n_frames) -> clip probabilities (batch, n_classes).

    With ``decision_level=True`` this is Cnn14_DecisionLevelMax: a class score per segment of
    32 frames (0.32 s), clip score = max over segments; :meth:`forward_frames` gives them.
    """

    def __init__(
        self, *, n_classes: int = N_CLASSES, n_mels: int = N_MELS, decision_level: bool = False
    ) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.decision_level = decision_level
        self.frame_hop_s = PANNS_FRONTEND.hop_length / PANNS_FRONTEND.sample_rate
        self.bn0 = nn.BatchNorm2d(n_mels)
        widths = (1, 64, 128, 256, 512, 1024, 2048)
        for i in range(6):
            pool = (2, 2) if i < 5 else (1, 1)
            block = ConvBlock(widths[i], widths[i + 1], pool=pool)
            self.add_module(f"conv_block{i + 1}", block)
        self.fc1 = nn.Linear(EMBEDDING_SIZE, EMBEDDING_SIZE)
        self.fc_audioset = nn.Linear(EMBEDDING_SIZE, n_classes)

    def _body(self) -> list[nn.Module]:
        return [getattr(self, f"conv_block{i}") for i in range(1, 7)]

    def set_body_dtype(self, dtype: torch.dtype) -> None:
        """Run the six conv blocks in ``dtype`` (bfloat16: weights cast, channels-last); bn0 and
        the fully connected head stay float32."""
        cast_body(self._body(), dtype)

    def inference_copy(
        self, *, dtype: torch.dtype = torch.float32, matmul_widths: Collection[int] | None = None
    ) -> Cnn14:
        """A copy that computes the same scores faster, for inference only: each conv block's
        batch norms folded into its convolutions (then cast to ``dtype``), ReLU in place,
        channels-last; the first convolution (one input channel), and the narrow blocks where
        that is faster on this machine, as matrix products. This model is left as it is (see
        :func:`fused_copy`, whose ``matmul_widths`` overrides the measurement)."""
        widths = {f"conv_block{i + 1}": self.n_mels >> i for i in range(6)}
        return fused_copy(self, widths, dtype=dtype, matmul_widths=matmul_widths)

    def _feature_maps(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, n_frames) -> float32 (batch, 2048, n_frames // 32), averaged over frequency."""
        check_features(features, n_mels=self.n_mels, min_frames=TIME_REDUCTION, model="cnn14")
        x = to_image(self.bn0, features).to(self.conv_block1.conv1.weight.dtype)
        for block in self._body():
            x = block(x)
            x = F.dropout(x, p=0.2, training=self.training)
        return x.float().mean(dim=3)

    def _segments(self, x: torch.Tensor) -> torch.Tensor:
        """Decision-level head: (batch, 2048, n_segments) -> (batch, n_segments, n_classes)."""
        with float32_head(x):
            x = F.max_pool1d(x, 3, stride=1, padding=1) + F.avg_pool1d(x, 3, stride=1, padding=1)
            x = F.dropout(x, p=0.5, training=self.training).transpose(1, 2)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, p=0.5, training=self.training)
            return torch.sigmoid(self.fc_audioset(x))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Clip probabilities.

        Parameters
        ----------
        features : torch.Tensor
            Log-Mel features, shape (batch, 64, n_frames), n_frames >= 32.

        Returns
        -------
        torch.Tensor
            Probabilities in [0, 1], shape (batch, n_classes).

        Raises
        ------
        AudioError
            If the features do not have 64 mel bands or are shorter than 32 frames.
        """
        x = self._feature_maps(features)
        if self.decision_level:
            return self._segments(x).amax(dim=1)
        with float32_head(x):
            x = x.amax(dim=2) + x.mean(dim=2)
            x = F.dropout(x, p=0.5, training=self.training)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, p=0.5, training=self.training)
            return torch.sigmoid(self.fc_audioset(x))

    def forward_frames(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip and frame probabilities of the decision-level variant.

        Parameters
        ----------
        features : torch.Tensor
            Log-Mel features, shape (batch, 64, n_frames), n_frames >= 32.

        Returns
        -------
        clip : torch.Tensor
            Shape (batch, n_classes): the maximum over segments.
        frames : torch.Tensor
            Shape (batch, n_frames, n_classes), one row per input frame (``frame_hop_s`` =
            0.01 s apart); each 0.32-s segment is repeated over its 32 frames and the last one
            fills the frames after the last whole segment, as upstream.

        Raises
        ------
        AudioError
            If the model is the clip-level Cnn14 (it has no frame output), or the features do
            not fit.
        """
        if not self.decision_level:
            raise AudioError(
                "the clip-level cnn14 has no frame output; build Cnn14(decision_level=True) "
                "and load the Cnn14_DecisionLevelMax checkpoint for frame scores"
            )
        segments = self._segments(self._feature_maps(features))
        frames = upsample_frames(segments, ratio=TIME_REDUCTION, n_frames=features.shape[2])
        return segments.amax(dim=1), frames


# --- checkpoints ----------------------------------------------------------------------------


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a torch checkpoint in the upstream layout ``{"model": state_dict, ...}``.

    A bare state_dict is accepted too. Loading uses ``weights_only=True``.

    Parameters
    ----------
    path : Path
        The checkpoint file.

    Returns
    -------
    dict
        The state_dict, parameter name -> tensor.

    Raises
    ------
    CheckpointError
        If the file is missing, cannot be unpickled with ``weights_only=True``, or holds no
        state_dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; expected a torch .pth file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors alike
        raise CheckpointError(
            f"cannot read {path} as a torch checkpoint (loaded with weights_only=True): {e}"
        ) from e
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path}: expected {{'model': state_dict}} or a state_dict of tensors, got {keys}"
        )
    return dict(obj)


def strip_frontend(
    state_dict: Mapping[str, torch.Tensor], *, frontend: FrontendConfig, source: str
) -> dict[str, torch.Tensor]:
    """Check the torchlibrosa frontend weights of a PANNs checkpoint and return the rest.

    ``spectrogram_extractor.stft.conv_real/conv_imag.weight`` (n_fft // 2 + 1, 1, n_fft) must
    be the real and imaginary parts of the DFT times calitag's analysis window, and
    ``logmel_extractor.melW`` (n_fft // 2 + 1, n_mels) the transpose of calitag's mel
    filters; checkpoints without these keys pass unchanged.

    Parameters
    ----------
    state_dict : Mapping
        A full upstream state_dict.
    frontend : FrontendConfig
        The frontend calitag runs before the network.
    source : str
        The checkpoint's path, for messages.

    Returns
    -------
    dict
        The state_dict without the frontend keys.

    Raises
    ------
    CheckpointError
        If a frontend weight differs from calitag's frontend beyond float32 rounding, or an
        unknown frontend key is present.
    """
    rest = {k: v for k, v in state_dict.items() if not k.startswith(FRONTEND_PREFIXES)}
    present = {k: state_dict[k] for k in state_dict if k.startswith(FRONTEND_PREFIXES)}
    if not present:
        return rest
    unknown = sorted(set(present) - set(FRONTEND_KEYS))
    if unknown:
        raise CheckpointError(
            f"{source}: unexpected frontend keys {unknown}; expected only {list(FRONTEND_KEYS)}"
        )
    n_bins = frontend.n_fft // 2 + 1
    window = torch.from_numpy(librosa.util.pad_center(analysis_window(frontend), size=frontend.n_fft))
    mel = mel_filters(frontend)
    angle = (
        2
        * math.pi
        * torch.outer(
            torch.arange(n_bins, dtype=torch.float64),
            torch.arange(frontend.n_fft, dtype=torch.float64),
        ).remainder(frontend.n_fft)
        / frontend.n_fft
    )
    expected = {
        FRONTEND_KEYS[0]: (torch.cos(angle) * window).unsqueeze(1),
        FRONTEND_KEYS[1]: (-torch.sin(angle) * window).unsqueeze(1),
        FRONTEND_KEYS[2]: torch.from_numpy(mel).double().T,
    }
    for key, got in present.items():
        want = expected[key]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(got.shape)}, calitag's frontend "
                f"(n_fft {frontend.n_fft}, {frontend.n_mels} mels) needs {tuple(want.shape)}; "
                "the checkpoint was trained with another frontend"
            )
        # float32 storage: a relative error of 1e-4 of the largest weight is rounding.
        tolerance = 1e-4 * float(want.abs().max())
        diff = float((got.double() - want).abs().max())
        if diff > tolerance:
            raise CheckpointError(
                f"{source}: {key} differs from calitag's frontend by up to {diff:.3g} "
                f"(tolerance {tolerance:.3g}); expected the {frontend.sample_rate} Hz, "
                f"n_fft {frontend.n_fft}, {frontend.n_mels}-mel "
                f"{frontend.f_min:g}-{frontend.f_max:g} Hz frontend"
            )
    return rest


def load_network_state(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Load ``state_dict`` into ``module`` strictly, naming every missing or misfit key.

    BatchNorm ``num_batches_tracked`` counters may be absent (old checkpoints lack them).

    Parameters
    ----------
    module : nn.Module
        The network.
    state_dict : Mapping
        Its weights, frontend keys removed.
    source : str
        The checkpoint's path, for messages.

    Raises
    ------
    CheckpointError
        If keys are missing or unexpected, or shapes differ.
    """
    own = module.state_dict()
    state = dict(state_dict)
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misfit = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:5]}")
    if misfit:
        problems.append(f"{len(misfit)} shape mismatches, e.g. {misfit[:5]}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__}: "
            + "; ".join(problems)
            + "; expected an upstream checkpoint of this architecture"
        )
    module.load_state_dict(state, strict=True)


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Upstream initialisation, drawn from ``generator``: Xavier-uniform weights, zero biases,
    unit batch-norm scales."""
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def load(checkpoint: Path | None, *, seed: int = 0, decision_level: bool = False) -> Cnn14:
    """Build Cnn14 in eval mode on the CPU, with a checkpoint's weights or random ones.

    Parameters
    ----------
    checkpoint : Path or None
        An upstream PANNs checkpoint (``Cnn14_mAP=0.431.pth``, or for ``decision_level``
        ``Cnn14_DecisionLevelMax_mAP=0.385.pth``); None gives random weights.
    seed : int
        Seed of the ``torch.Generator`` that draws random weights (ignored with a checkpoint).
    decision_level : bool
        Build Cnn14_DecisionLevelMax, which has frame outputs.

    Returns
    -------
    Cnn14
        The network, in eval mode.

    Raises
    ------
    CheckpointError
        If the checkpoint cannot be read or does not fit (keys, shapes, frontend weights).
    """
    model = Cnn14(decision_level=decision_level)
    if checkpoint is None:
        init_weights(model, torch.Generator().manual_seed(seed))
    else:
        state = read_checkpoint(Path(checkpoint))
        state = strip_frontend(state, frontend=PANNS_FRONTEND, source=str(checkpoint))
        load_network_state(model, state, source=str(checkpoint))
    return model.eval()


def load_decision_level(checkpoint: Path | None, *, seed: int = 0) -> Cnn14:
    """:func:`load` with ``decision_level=True``: Cnn14_DecisionLevelMax, for a registry builder."""
    return load(checkpoint, seed=seed, decision_level=True)
