"""The DCASE2019 CRNN converted from its Keras weights (models/crnn.py, models/keras_h5.py)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf
torch = pytest.importorskip("torch", reason="the torch models need the torch extra")  # noqa: E402

from calitag.errors import AudioError, CheckpointError, ChecksumError
from calitag.models import crnn
from calitag.models.checkpoints import file_digests, verify_file
from calitag.models.keras_h5 import read_keras_weights
from calitag.models.registry import MODELS
from calitag.models.torch_frontend import LogMel

H5_NAME = "crnn_dcase2019_pellegrini_irit_task4_1.h5"
GOLDEN_NAME = "crnn_dcase2019_golden.npz"
CLIP_NAME = "R9_ZSCveAHg_7s.wav"
CLASSES = (
    "Alarm_bell_ringing", "Speech", "Dog", "Cat", "Vacuum_cleaner",
    "Dishes", "Frying", "Electric_shaver_toothbrush", "Blender", "Running_water",
)


@pytest.fixture(scope="module")
def h5_path(shared):
    return shared / "models" / H5_NAME


@pytest.fixture(scope="module")
def golden(shared):
    with np.load(shared / "models" / GOLDEN_NAME) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def model(h5_path):
    return crnn.load(h5_path)


@pytest.fixture(scope="module")
def clip_logmel(shared):
    samples, rate = sf.read(shared / "audio" / CLIP_NAME, dtype="float32")
    spec = MODELS["crnn-dcase2019"]
    resampled = librosa.resample(samples, orig_sr=rate, target_sr=spec.frontend.sample_rate)
    return LogMel(spec.frontend)(torch.from_numpy(resampled)[None])


def test_keras_file_layers(h5_path):
    """read_keras_weights lists every weighted layer of the h5 with Keras-layout shapes."""
    layers = read_keras_weights(h5_path)
    assert layers["conv2d_1"]["kernel:0"].shape == (3, 3, 1, 64)
    assert layers["bidirectional_1"]["backward_gru_1/recurrent_kernel:0"].shape == (64, 192)
    assert layers["dense_3"]["kernel:0"].shape == (20, 1024)
    assert sum(w.size for layer in layers.values() for w in layer.values()) == 165_460


def test_checkpoint_sha256_matches_registry(h5_path):
    """The shared h5 is the published file the registry names: its sha256 and its size."""
    spec = MODELS["crnn-dcase2019"].checkpoint
    assert file_digests(h5_path)[0] == spec.sha256
    assert verify_file(h5_path, sha256=spec.sha256, size_bytes=spec.size_bytes) == spec.sha256


def test_parameter_count():
    """Weights plus batch-norm statistics add up to the 165,460 of the Keras model."""
    model = crnn.load(None, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    n_stats = sum(b.numel() for name, b in model.named_buffers() if "running" in name)
    assert n_params + n_stats == 165_460


def test_golden_clip_and_frame_outputs(model, golden):
    """Clip and frame outputs equal the Keras graph's to 1e-4 on the golden features."""
    with torch.no_grad():
        clip, frames = model.forward_frames(torch.from_numpy(golden["features"]))
    assert clip.shape == (4, 10) and frames.shape == (4, 431, 10)
    assert np.abs(clip.numpy() - golden["clip_scores"]).max() <= 1e-4
    assert np.abs(frames.numpy() - golden["frame_scores"]).max() <= 1e-4
    assert torch.equal(model(torch.from_numpy(golden["features"])), clip)


def test_golden_class_order(golden):
    """The golden file lists the classes in the order the registry's label list must use."""
    assert tuple(golden["classes"]) == CLASSES


def test_frontend_reproduces_golden_features(clip_logmel, golden):
    """LogMel of the registry config, padded with prepare_features, gives golden item 0 to 1e-3 dB."""
    assert clip_logmel.shape[-1] < crnn.N_FRAMES  # a 7-s clip: the padding is exercised
    prepared = crnn.prepare_features(clip_logmel)
    assert prepared.shape == (1, 64, 431)
    max_error_db = np.abs(prepared[0].numpy() - golden["features"][0]).max()
    assert max_error_db <= 1e-3, (
        f"{max_error_db:.3g} dB off the golden: its frontend is librosa>=0.10's melspectrogram, "
        "which pads centred frames with zeros (pad_mode='constant')"
    )


def test_real_clip_speech_first(model, clip_logmel):
    """The speech clip with a telephone bell gets Speech first, with a clip score near 0.99."""
    with torch.no_grad():
        clip = model(crnn.prepare_features(clip_logmel))[0]
    assert CLASSES[int(clip.argmax())] == "Speech"
    assert clip.max().item() > 0.98


def test_prepare_features_pads_with_minimum_and_crops():
    """Shorter inputs are padded with their own minimum per item; longer ones keep the first 431 frames."""
    generator = torch.Generator().manual_seed(0)
    short = torch.randn(2, 64, 300, generator=generator)
    short[1] -= 50.0
    padded = crnn.prepare_features(short)
    assert padded.shape == (2, 64, 431)
    assert torch.equal(padded[..., :300], short)
    for item in range(2):
        assert torch.all(padded[item, :, 300:] == short[item].min())
    long = torch.randn(1, 64, 500, generator=generator)
    assert torch.equal(crnn.prepare_features(long), long[..., :431])
    with pytest.raises(AudioError, match="n_frames > 0"):
        crnn.prepare_features(torch.zeros(1, 64, 0))


def test_bigru_backward_direction_reads_time_reversed():
    """Swapping the GRU directions' weights and reversing time mirrors the output with halves swapped."""
    torch.manual_seed(1)
    gru = crnn.KerasBiGRU(8, 5)
    x = torch.randn(3, 17, 8)
    mirrored = crnn.KerasBiGRU(8, 5)
    with torch.no_grad():
        for name in ("kernel", "recurrent_kernel", "bias"):
            getattr(mirrored, name).copy_(getattr(gru, name).flip(0))
        out, out_mirrored = gru(x), mirrored(x.flip(1))
    assert torch.allclose(out_mirrored.flip(1), torch.cat([out[..., 5:], out[..., :5]], dim=-1), atol=1e-6)


def test_keras_gru_gates_differ_from_torch_gru():
    """The Keras recurrence (hard sigmoid, reset before the matmul) is not torch.nn.GRU's."""
    assert crnn.keras_hard_sigmoid(torch.tensor([-3.0, 0.0, 1.0, 3.0])).tolist() == pytest.approx([0.0, 0.5, 0.7, 1.0])
    torch.manual_seed(2)
    gru = crnn.KerasBiGRU(4, 3)
    reference = torch.nn.GRU(4, 3, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for direction, suffix in enumerate(("", "_reverse")):
            # torch gates are (r, z, n) rows; Keras's are (z, r, h) columns.
            kernel, recurrent = gru.kernel[direction], gru.recurrent_kernel[direction]
            z, r, h = kernel.split(3, dim=1)
            getattr(reference, f"weight_ih_l0{suffix}").copy_(torch.cat([r, z, h], dim=1).t())
            z, r, h = recurrent.split(3, dim=1)
            getattr(reference, f"weight_hh_l0{suffix}").copy_(torch.cat([r, z, h], dim=1).t())
            z, r, h = gru.bias[direction].split(3)
            getattr(reference, f"bias_ih_l0{suffix}").copy_(torch.cat([r, z, h]))
            getattr(reference, f"bias_hh_l0{suffix}").zero_()
        x = torch.randn(2, 9, 4)
        assert not torch.allclose(gru(x), reference(x)[0], atol=1e-3)


def test_random_weights_are_seeded_and_leave_global_rng_alone():
    """load(None, seed=s) is reproducible per seed and does not move torch's global RNG."""
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = crnn.load(None, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    second, other = crnn.load(None, seed=7), crnn.load(None, seed=8)
    features = torch.randn(1, 64, 50)
    with torch.no_grad():
        assert torch.equal(first(features), second(features))
        assert not torch.equal(first(features), other(features))
    assert not first.training


def test_wrong_inputs_raise():
    """Features with another band count raise AudioError naming the expected shape."""
    model = crnn.load(None, seed=0)
    with pytest.raises(AudioError, match=r"\(batch, 64, n_frames\)"):
        model(torch.zeros(1, 40, 431))


def test_bad_checkpoints_raise(tmp_path, audio_samples):
    """A missing file, a file that is not the published one, and a non-HDF5 file raise clear errors."""
    with pytest.raises(CheckpointError, match="not found"):
        crnn.load(tmp_path / "absent.h5")
    altered = tmp_path / "altered.h5"
    size = MODELS["crnn-dcase2019"].checkpoint.size_bytes  # the published size: only the sha256 tells them apart
    altered.write_bytes(((audio_samples / "soundscapes" / "tune_00.flac").read_bytes() * 8)[:size])
    with pytest.raises(ChecksumError, match="expected 4965008682f2"):
        crnn.load(altered)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(CheckpointError, match="cannot read .* as HDF5"):
        crnn.load(text, verify=False)
