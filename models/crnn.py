"""The DCASE2019 task 4 CRNN of Cances & Pellegrini (submission PELLEGRINI_IRIT_task4_1), in torch.

The published weights are a Keras 2.2.4 HDF5 file; :func:`load` converts them. Facts reproduced
(165,460 parameters): input log-Mel (64 mel, 431 frames); 3 x [conv 64 3x3 same, batch norm
eps 1e-3, ReLU, max-pool (4, 1) over mel]; a bidirectional GRU of 64 units per direction in
Keras's formulation (``reset_after=False``: the reset gate multiplies the state *before* the
recurrent matmul, and the gates use Keras's hard sigmoid ``clip(0.2 x + 0.5, 0, 1)``), which
torch.nn.GRU does not implement; a time-distributed Dense 64 ReLU; the frame output Dense 10
sigmoid; the clip head [mean; max] of the frame outputs over time -> Dense 1024 ReLU ->
Dense 10 sigmoid.

Pooling is over mel only, so the frame outputs keep the frontend's hop: 512 / 22050 s.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from calitag.errors import AudioError, CheckpointError
from calitag.models.checkpoints import verify_file
from calitag.models.keras_h5 import read_keras_weights
from calitag.models.mixed_precision import cast_body, float32_head
from calitag.models.registry import get_spec

N_MELS = 64
N_FRAMES = 431  # 10 s at 22,050 Hz, hop 512, centred frames: 1 + 220500 // 512
N_CLASSES = 10
FRAME_HOP_S = 512 / 22_050  # 0.023220 s between frame outputs
GRU_UNITS = 64


def keras_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 2's hard sigmoid, clip(0.2 x + 0.5, 0, 1) (torch's hardsigmoid uses x / 6)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class KerasBiGRU(nn.Module):
    """Bidirectional Keras GRU (reset_after=False, hard-sigmoid gates, tanh), outputs concatenated.

    Weights keep Keras's layout, gates ordered (z, r, h): ``kernel`` (2, input, 3 H),
    ``recurrent_kernel`` (2, H, 3 H), ``bias`` (2, 3 H); index 0 is the forward direction.
    (batch, time, input) -> (batch, time, 2 H).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.kernel = nn.Parameter(torch.empty(2, input_size, 3 * hidden_size))
        self.recurrent_kernel = nn.Parameter(torch.empty(2, hidden_size, 3 * hidden_size))
        self.bias = nn.Parameter(torch.empty(2, 3 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)  # as torch.nn.GRU
        for param in (self.kernel, self.recurrent_kernel, self.bias):
            nn.init.uniform_(param, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden_size
        batch, n_steps, _ = x.shape
        # Input projections of every step at once; the backward direction runs on reversed time.
        projected = torch.einsum("bti,dig->dtbg", x, self.kernel) + self.bias[:, None, None, :]
        projected = torch.stack([projected[0], projected[1].flip(0)])  # (2, T, B, 3H)
        recurrent_zr = self.recurrent_kernel[:, :, : 2 * hidden]
        recurrent_h = self.recurrent_kernel[:, :, 2 * hidden :]
        state = x.new_zeros(2, batch, hidden)
        outputs = []
        for step in range(n_steps):
            inputs = projected[:, step]
            gates = keras_hard_sigmoid(inputs[..., : 2 * hidden] + torch.bmm(state, recurrent_zr))
            update, reset = gates[..., :hidden], gates[..., hidden:]
            candidate = torch.tanh(inputs[..., 2 * hidden :] + torch.bmm(reset * state, recurrent_h))
            state = update * state + (1.0 - update) * candidate
            outputs.append(state)
        sequence = torch.stack(outputs, dim=2)  # (2, B, T, H)
        return torch.cat([sequence[0], sequence[1].flip(1)], dim=-1)


class ConvBlock(nn.Module):
    """Conv 3x3 same -> batch norm (eps 1e-3) -> ReLU -> max-pool (4, 1) over mel."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.pool = nn.MaxPool2d(kernel_size=(4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class CRNN(nn.Module):
    """Log-Mel (batch, 64, n_frames) -> clip probabilities (batch, 10); see forward_frames."""

    def __init__(self, *, n_mels: int = N_MELS, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        if n_mels != 4**3:
            raise ValueError(f"the CRNN pools mel by 4 three times to 1: expected 64 mel bands, got {n_mels}")
        self.n_mels = n_mels
        self.blocks = nn.Sequential(ConvBlock(1, 64), ConvBlock(64, 64), ConvBlock(64, 64))
        self.gru = KerasBiGRU(64, GRU_UNITS)
        self.frame_dense = nn.Linear(2 * GRU_UNITS, 64)
        self.frame_out = nn.Linear(64, n_classes)
        self.clip_dense = nn.Linear(2 * n_classes, 1024)
        self.clip_out = nn.Linear(1024, n_classes)

    def forward_frames(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip and frame probabilities.

        Parameters
        ----------
        features : torch.Tensor
            Log-Mel in dB, shape (batch, 64, n_frames); the model was trained on 431 frames
            (see :func:`prepare_features`).

        Returns
        -------
        clip : torch.Tensor
            Shape (batch, 10), in [0, 1].
        frames : torch.Tensor
            Shape (batch, n_frames, 10), in [0, 1], one row every :data:`FRAME_HOP_S` seconds.
        """
        if features.dim() != 3 or features.shape[1] != self.n_mels:
            raise AudioError(
                f"the CRNN expects features of shape (batch, {self.n_mels}, n_frames), "
                f"got {tuple(features.shape)}"
            )
        # The first block sees raw dB values (-80..0), which bfloat16 would round by up to 0.25 dB:
        # it stays float32 (6% of the convolutions' work) and the body starts after it.
        x = self.blocks[0](features.unsqueeze(1)).to(self.blocks[1].conv.weight.dtype)
        x = self.blocks[2](self.blocks[1](x))  # (B, 64 channels, 1 mel, T)
        with float32_head(x):
            x = x.float().squeeze(2).transpose(1, 2)  # (B, T, 64 channels), Keras's Reshape order
            x = self.gru(x)
            x = torch.relu(self.frame_dense(x))
            frames = torch.sigmoid(self.frame_out(x))  # (B, T, 10)
            pooled = torch.cat([frames.mean(dim=1), frames.amax(dim=1)], dim=-1)
            clip = torch.sigmoid(self.clip_out(torch.relu(self.clip_dense(pooled))))
        return clip, frames

    def set_body_dtype(self, dtype: torch.dtype) -> None:
        """Run the second and third conv blocks in ``dtype`` (bfloat16: weights cast,
        channels-last); the first block (raw dB input), the recurrent layer and the dense heads
        stay float32 (a bfloat16 state would round at each of the 431 steps, and the GRU's small
        matmuls gain nothing from it)."""
        cast_body(self.blocks[1:], dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.forward_frames(features)[0]


def prepare_features(features: torch.Tensor, *, n_frames: int = N_FRAMES) -> torch.Tensor:
    """Fit log-Mel features to the CRNN's fixed input length, as its authors did.

    A shorter input is padded at the end with its own minimum value (per item); a longer
    one keeps its first ``n_frames`` frames.

    Parameters
    ----------
    features : torch.Tensor
        Shape (batch, n_mels, T).
    n_frames : int
        The length to return (431: 10 s at 22,050 Hz, hop 512).

    Returns
    -------
    torch.Tensor
        Shape (batch, n_mels, n_frames).

    Raises
    ------
    AudioError
        If ``features`` is not 3-dimensional or has no frame.
    """
    if features.dim() != 3 or features.shape[-1] == 0:
        raise AudioError(
            f"expected features of shape (batch, n_mels, n_frames > 0), got {tuple(features.shape)}"
        )
    length = features.shape[-1]
    if length >= n_frames:
        return features[..., :n_frames]
    floor = features.amin(dim=(1, 2), keepdim=True)
    padding = floor.expand(features.shape[0], features.shape[1], n_frames - length)
    return torch.cat([features, padding], dim=-1)


def convert_keras_weights(layers: dict[str, dict], *, source: str = "<dict>") -> dict[str, torch.Tensor]:
    """Map the layers of the published Keras file to a :class:`CRNN` state_dict.

    Parameters
    ----------
    layers : dict
        Output of :func:`calitag.models.keras_h5.read_keras_weights`.
    source : str
        The file name, for error messages.

    Returns
    -------
    dict[str, torch.Tensor]
        A complete state_dict for :class:`CRNN` (float32).

    Raises
    ------
    CheckpointError
        If a layer or weight is missing or has another shape.
    """

    def take(layer: str, name: str) -> torch.Tensor:
        try:
            return torch.from_numpy(layers[layer][name].astype("float32"))
        except KeyError as err:
            raise CheckpointError(
                f"{source} lacks weight {layer}/{name}: expected the Keras file of the DCASE2019 "
                f"CRNN (layers found: {', '.join(layers)})"
            ) from err

    state: dict[str, torch.Tensor] = {}
    for index in range(3):
        conv, bn, prefix = f"conv2d_{index + 1}", f"batch_normalization_{index + 1}", f"blocks.{index}"
        # Keras kernels are (height, width, in, out); torch's are (out, in, height, width).
        state[f"{prefix}.conv.weight"] = take(conv, "kernel:0").permute(3, 2, 0, 1).contiguous()
        state[f"{prefix}.conv.bias"] = take(conv, "bias:0")
        state[f"{prefix}.bn.weight"] = take(bn, "gamma:0")
        state[f"{prefix}.bn.bias"] = take(bn, "beta:0")
        state[f"{prefix}.bn.running_mean"] = take(bn, "moving_mean:0")
        state[f"{prefix}.bn.running_var"] = take(bn, "moving_variance:0")
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)
    directions = ("forward_gru_1", "backward_gru_1")
    for key, name in (("kernel", "kernel:0"), ("recurrent_kernel", "recurrent_kernel:0"), ("bias", "bias:0")):
        state[f"gru.{key}"] = torch.stack([take("bidirectional_1", f"{d}/{name}") for d in directions])
    # Keras Dense kernels are (in, out); torch Linear weights are (out, in).
    for torch_name, keras_name in (
        ("frame_dense", "time_distributed_1"),
        ("frame_out", "loc_output"),
        ("clip_dense", "dense_3"),
        ("clip_out", "at_output"),
    ):
        state[f"{torch_name}.weight"] = take(keras_name, "kernel:0").t().contiguous()
        state[f"{torch_name}.bias"] = take(keras_name, "bias:0")
    return state


def load(checkpoint: Path | None, *, seed: int = 0, verify: bool = True) -> CRNN:
    """Build the CRNN, with the published Keras weights or seeded random ones.

    Parameters
    ----------
    checkpoint : Path or None
        The Keras HDF5 file (crnn_dcase2019_pellegrini_irit_task4_1.h5); None gives random
        weights drawn from ``seed``.
    seed : int
        Seed of the random weights when ``checkpoint`` is None.
    verify : bool
        Check the file's sha256 against the registry before reading it.

    Returns
    -------
    CRNN
        In eval mode, on the CPU.

    Raises
    ------
    ChecksumError
        If ``verify`` and the file is not the published one.
    CheckpointError
        If the file cannot be read or does not fit the architecture.
    """
    if checkpoint is None:
        # A private RNG stream: the caller's global torch seed is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return CRNN().eval()
    model = CRNN()
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(
            f"CRNN checkpoint {checkpoint} not found: pass the Keras file "
            "crnn_dcase2019_pellegrini_irit_task4_1.h5"
        )
    expected = get_spec("crnn-dcase2019").checkpoint.sha256
    if verify and expected:
        verify_file(checkpoint, sha256=expected, what="CRNN checkpoint")
    state = convert_keras_weights(read_keras_weights(checkpoint), source=str(checkpoint))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint} does not fit the DCASE2019 CRNN: {err}") from err
    return model.eval()

