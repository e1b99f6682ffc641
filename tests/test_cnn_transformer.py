"""CNN-transformer-avg: upstream layout, parameter count, attention, frame and clip outputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import soundfile as sf
import soxr
torch = pytest.importorskip("torch", reason="the torch models need the torch extra")  # noqa: E402

from calitag.errors import AudioError, CheckpointError
from calitag.models import cnn_transformer
from calitag.models.registry import MODELS
from calitag.models.torch_frontend import LogMel

CLIP = "soundscapes/tune_00.flac"  # 10 s of speech and an alarm bell


@pytest.fixture(scope="module")
def features(audio_samples: Path) -> torch.Tensor:
    """log-Mel features of two 2-s excerpts of a real recording, shape (2, 64, 201)."""
    samples, rate = sf.read(audio_samples / CLIP, dtype="float32")
    target = MODELS["cnn-transformer"].frontend.sample_rate
    if rate != target:
        samples = soxr.resample(samples, rate, target)
    n = 2 * target
    batch = torch.stack(
        [torch.from_numpy(samples[:n]), torch.from_numpy(samples[3 * target : 3 * target + n])]
    )
    with torch.inference_mode():
        return LogMel(MODELS["cnn-transformer"].frontend)(batch)


def _upstream_keys() -> dict[str, tuple[int, ...]]:
    """The state_dict of upstream's Cnn_9layers_Transformer_FrameAvg, from its layer list."""
    keys: dict[str, tuple[int, ...]] = {}

    def batchnorm(name: str, n: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.{p}"] = (n,)
        keys[f"{name}.num_batches_tracked"] = ()

    batchnorm("bn0", 64)
    widths = (1, 64, 128, 256, 512)
    for i in range(4):
        c_in, c_out = widths[i], widths[i + 1]
        keys[f"conv_block{i + 1}.conv1.weight"] = (c_out, c_in, 3, 3)
        keys[f"conv_block{i + 1}.conv2.weight"] = (c_out, c_out, 3, 3)
        batchnorm(f"conv_block{i + 1}.bn1", c_out)
        batchnorm(f"conv_block{i + 1}.bn2", c_out)
    for name in ("w_qs", "w_ks", "w_vs", "fc"):
        keys[f"multihead.{name}.weight"] = (512, 512)
        keys[f"multihead.{name}.bias"] = (512,)
    keys["multihead.layer_norm.weight"] = (512,)
    keys["multihead.layer_norm.bias"] = (512,)
    keys["fc.weight"] = (17, 512)
    keys["fc.bias"] = (17,)
    return keys


def test_state_dict_keys_and_shapes_equal_upstream() -> None:
    """The module's state_dict has exactly the upstream key names and shapes."""
    model = cnn_transformer.CnnTransformer()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _upstream_keys()


def test_parameter_count_is_that_of_the_paper() -> None:
    """The parameter count is the sum over the upstream layers and rounds to the paper's 5.75 M."""
    model = cnn_transformer.CnnTransformer()
    n = sum(p.numel() for p in model.parameters())
    trainable = sum(
        math.prod(s)
        for k, s in _upstream_keys().items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert n == trainable
    assert round(n / 1e6, 2) == 5.75


def test_attention_is_scaled_dot_product_over_eight_heads() -> None:
    """MultiHead computes relu(fc(concat_h softmax(q_h k_h^T / 8) v_h)) with 64-dim heads."""
    model = cnn_transformer.load(None, seed=4)
    attention = model.multihead
    x = torch.randn(2, 25, 512, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = attention(x)
        q, k, v = (
            layer(x).view(2, 25, 8, 64)
            for layer in (attention.w_qs, attention.w_ks, attention.w_vs)
        )
        weights = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / 8.0, dim=-1)
        heads = torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(2, 25, 512)
        expected = torch.relu(attention.fc(heads))
    assert float((got - expected).abs().max()) <= 1e-5


def test_clip_is_mean_of_frames_at_input_rate(features: torch.Tensor) -> None:
    """forward_frames gives one row per input frame, constant over 8-frame segments, whose
    segment mean is forward's clip output."""
    model = cnn_transformer.load(None, seed=0)
    with torch.inference_mode():
        clip, frames = model.forward_frames(features)
        alone = model(features[1:])
    n_frames = features.shape[2]
    assert clip.shape == (2, 17) and frames.shape == (2, n_frames, 17)
    whole = (n_frames // 8) * 8
    segments = frames[:, :whole].reshape(2, n_frames // 8, 8, 17)
    assert torch.equal(segments, segments[:, :, :1].expand_as(segments))
    assert torch.allclose(segments[:, :, 0].mean(dim=1), clip, atol=1e-6)
    assert torch.equal(
        frames[:, whole:], frames[:, whole - 1 : whole].expand(-1, n_frames - whole, -1)
    )
    assert float(frames.std()) > 1e-3  # random weights still move with the audio
    assert torch.allclose(alone, clip[1:], atol=1e-5)  # items of a batch are independent
    assert model.frame_hop_s == pytest.approx(0.01)


def test_upstream_checkpoint_round_trips(features: torch.Tensor, tmp_path: Path) -> None:
    """A checkpoint {'model': state_dict} with upstream keys loads and reproduces the outputs."""
    source = cnn_transformer.load(None, seed=7)
    path = tmp_path / "cnn_transformer.pth"
    torch.save({"model": source.state_dict(), "iteration": 1000}, path)
    loaded = cnn_transformer.load(path)
    with torch.inference_mode():
        assert torch.equal(loaded(features), source(features))


def test_upstream_checkpoint_with_frontend_keys_loads(tmp_path: Path) -> None:
    """The torchlibrosa frontend keys of an upstream checkpoint are checked and dropped."""
    pytest.importorskip("torchlibrosa", reason="test extra: torchlibrosa")
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    state = cnn_transformer.load(None, seed=1).state_dict()
    spec = Spectrogram(n_fft=1024, hop_length=320, win_length=1024, freeze_parameters=True)
    logmel = LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, top_db=None)
    state.update({f"spectrogram_extractor.{k}": v for k, v in spec.state_dict().items()})
    state.update({f"logmel_extractor.{k}": v for k, v in logmel.state_dict().items()})
    path = tmp_path / "with_frontend.pth"
    torch.save({"model": state}, path)
    loaded = cnn_transformer.load(path)
    assert torch.equal(loaded.fc.weight, state["fc.weight"])


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    """A checkpoint with 527 output classes and without the attention raises CheckpointError."""
    state = {
        k: v
        for k, v in cnn_transformer.load(None).state_dict().items()
        if not k.startswith("multihead.")
    }
    state["fc.weight"] = torch.zeros(527, 512)
    path = tmp_path / "other.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"multihead\.fc\.bias.*fc\.weight \(527, 512\)"):
        cnn_transformer.load(path)


def test_random_weights_follow_the_seed() -> None:
    """load(None, seed=s) is reproducible and differs between seeds."""
    a, b, c = (cnn_transformer.load(None, seed=s) for s in (5, 5, 6))
    assert torch.equal(a.multihead.w_qs.weight, b.multihead.w_qs.weight)
    assert not torch.equal(a.multihead.w_qs.weight, c.multihead.w_qs.weight)
    assert not a.training


def test_short_or_misshapen_features_raise_audio_error(features: torch.Tensor) -> None:
    """Fewer than 8 frames or another mel count raises AudioError naming the expectation."""
    model = cnn_transformer.load(None)
    with pytest.raises(AudioError, match="at least 8 frames, got 7"):
        model(features[:, :, :7])
    with pytest.raises(AudioError, match=r"\(batch, 64, n_frames\)"):
        model.forward_frames(features[:, :32])


def test_inference_copy_gives_the_eager_scores(features: torch.Tensor) -> None:
    """The inference copy (folded batch norms, channels-last, first convolution and last block as matmuls)
    gives the eager clip and frame scores within 1e-5 on real log-Mel features; the model's state is unchanged."""
    model = cnn_transformer.load(None, seed=1)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # non-trivial batch-norm statistics, so a misplaced fold shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m is not model.bn0:
                m.running_mean.normal_(0.0, 0.1, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fast = model.inference_copy(matmul_widths=(8,))  # the last block (8 mel bins) as a matmul too
    assert fast.conv_block1.conv1.as_matmul and fast.conv_block4.conv2.as_matmul
    assert not fast.conv_block2.conv1.as_matmul
    with torch.inference_mode():
        clip, frames = model.forward_frames(features)
        fast_clip, fast_frames = fast.forward_frames(features)
    assert float(clip.std()) > 1e-3
    assert float((fast_clip - clip).abs().max()) <= 1e-5
    assert float((fast_frames - frames).abs().max()) <= 1e-5
    assert all(torch.equal(model.state_dict()[key], value) for key, value in before.items())
