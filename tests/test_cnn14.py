"""PANNs Cnn14: fidelity to panns-inference's Cnn14, checkpoint layout, frontend weights."""

from __future__ import annotations

import importlib
import importlib.util
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
torch = pytest.importorskip("torch", reason="the torch models need the torch extra")  # noqa: E402

import calitag.models
from calitag.errors import AudioError, CheckpointError
from calitag.models import cnn14
from calitag.models.registry import MODELS
from calitag.models.torch_frontend import LogMel

SECONDS = 3.0
PANNS_ARGS = dict(
    sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000
)
AUDIOSET_CSV = Path(calitag.models.__file__).parent / "labels" / "audioset_527.csv"


def _write_label_csv(path: Path) -> None:
    """The AudioSet label CSV panns-inference reads at import: ours, or 527 placeholder rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if AUDIOSET_CSV.is_file():
        shutil.copyfile(AUDIOSET_CSV, path)
        return
    rows = ["index,mid,display_name"] + [f'{i},/m/placeholder{i},"class {i}"' for i in range(527)]
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def panns(tmp_path_factory: pytest.TempPathFactory):
    """panns_inference.models, imported with a temporary HOME holding its label CSV."""
    pytest.importorskip(
        "torchlibrosa", reason="test extra: torchlibrosa (panns-inference's frontend)"
    )
    if importlib.util.find_spec("panns_inference") is None:
        pytest.skip("test extra: panns-inference==0.1.1 is not installed")
    home = tmp_path_factory.mktemp("home")
    _write_label_csv(home / "panns_data" / "class_labels_indices.csv")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("MPLCONFIGDIR", str(home / "mpl"))
        return importlib.import_module("panns_inference.models")


@pytest.fixture(scope="module")
def waveform(wideband_32k: np.ndarray) -> torch.Tensor:
    """The first seconds of real audio_samples/ clips taken as 32-kHz wide-band audio, shape (1, n_samples)."""
    rate = MODELS["cnn14"].frontend.sample_rate
    assert rate == 32_000
    return torch.from_numpy(wideband_32k[: int(SECONDS * rate)].copy()).unsqueeze(0)


@pytest.fixture(scope="module")
def features(waveform: torch.Tensor) -> torch.Tensor:
    """calitag's log-Mel features of the clip, shape (1, 64, n_frames)."""
    with torch.inference_mode():
        return LogMel(MODELS["cnn14"].frontend)(waveform)


def _randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Give every batch norm non-trivial statistics, so a misplaced normalisation shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def _torchlibrosa_frontend() -> tuple[torch.nn.Module, torch.nn.Module]:
    """PANNs' frontend as upstream builds it with torchlibrosa: (Spectrogram, LogmelFilterBank)."""
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    spec = Spectrogram(
        n_fft=1024,
        hop_length=320,
        win_length=1024,
        window="hann",
        center=True,
        pad_mode="reflect",
        freeze_parameters=True,
    )
    logmel = LogmelFilterBank(
        sr=32000,
        n_fft=1024,
        n_mels=64,
        fmin=50,
        fmax=14000,
        ref=1.0,
        amin=1e-10,
        top_db=None,
        freeze_parameters=True,
    )
    return spec, logmel


def _torchlibrosa_frontend_state() -> dict[str, torch.Tensor]:
    """The frontend weights an upstream PANNs checkpoint carries, built by torchlibrosa."""
    spec, logmel = _torchlibrosa_frontend()
    state = {f"spectrogram_extractor.{k}": v for k, v in spec.state_dict().items()}
    state.update({f"logmel_extractor.{k}": v for k, v in logmel.state_dict().items()})
    return state


def test_logmel_matches_torchlibrosa_on_real_clip(
    waveform: torch.Tensor, features: torch.Tensor
) -> None:
    """calitag's LogMel equals the torchlibrosa frontend of PANNs within 1e-3 dB on a real clip."""
    pytest.importorskip("torchlibrosa", reason="test extra: torchlibrosa")
    spec, logmel = _torchlibrosa_frontend()
    with torch.inference_mode():
        reference = logmel(spec(waveform))[:, 0].transpose(1, 2)  # (1, 64, n_frames)
    assert reference.shape == features.shape
    assert float(features.std()) > 1.0  # a real, non-silent clip
    assert float((features - reference).abs().max()) <= 1e-3


@pytest.mark.slow
def test_upstream_checkpoint_gives_panns_inference_clip_output(
    panns, waveform: torch.Tensor, features: torch.Tensor, tmp_path: Path
) -> None:
    """A {'model': state_dict} checkpoint of panns-inference's Cnn14, frontend keys included,
    loads through cnn14.load and gives the same clip probabilities (max abs diff <= 1e-4), its
    inference copy too."""
    theirs = panns.Cnn14(**PANNS_ARGS, classes_num=527).eval()
    _randomise_batchnorm(theirs, seed=1)
    path = tmp_path / "Cnn14_random.pth"
    torch.save({"model": theirs.state_dict(), "iteration": 0}, path)
    ours = cnn14.load(path)
    path.unlink()
    with torch.inference_mode():
        expected = theirs(waveform)["clipwise_output"]
        got = ours(features)
        fused = ours.inference_copy()(features)
    assert got.shape == (1, 527)
    assert float(expected.std()) > 1e-3  # the scores differ across classes
    assert float((got - expected).abs().max()) <= 1e-4
    assert float((fused - expected).abs().max()) <= 1e-4


@pytest.mark.slow
def test_decision_level_matches_panns_inference(
    panns, waveform: torch.Tensor, features: torch.Tensor
) -> None:
    """Cnn14(decision_level=True) with the weights of panns-inference's Cnn14_DecisionLevelMax
    gives its clip and frame outputs (max abs diff <= 1e-4), frames at the input frame rate."""
    ours = cnn14.load(None, seed=3, decision_level=True)
    _randomise_batchnorm(ours, seed=2)
    theirs = panns.Cnn14_DecisionLevelMax(**PANNS_ARGS, classes_num=527).eval()
    state = theirs.state_dict()
    state.update(ours.state_dict())
    theirs.load_state_dict(state)
    with torch.inference_mode():
        expected = theirs(waveform)
        clip, frames = ours.forward_frames(features)
    assert frames.shape == (1, features.shape[2], 527)
    assert float((clip - expected["clipwise_output"]).abs().max()) <= 1e-4
    assert float((frames - expected["framewise_output"]).abs().max()) <= 1e-4
    assert torch.equal(frames.amax(dim=1), clip)
    assert ours.frame_hop_s == pytest.approx(320 / 32000)


def test_state_dict_and_parameter_count_equal_upstream(panns) -> None:
    """The network's keys and shapes are panns-inference's Cnn14 minus its frontend, and so is the
    parameter count (about 80.7 M)."""
    theirs = panns.Cnn14(**PANNS_ARGS, classes_num=527)
    expected = {
        k: tuple(v.shape)
        for k, v in theirs.state_dict().items()
        if not k.startswith(cnn14.FRONTEND_PREFIXES)
    }
    ours = cnn14.Cnn14()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(
        p.numel() for k, p in theirs.named_parameters() if not k.startswith(cnn14.FRONTEND_PREFIXES)
    )
    assert n_ours == n_theirs
    assert math.isclose(n_ours, 80.7e6, rel_tol=2e-3)


def test_frontend_weights_of_torchlibrosa_are_accepted_and_dropped() -> None:
    """strip_frontend accepts the torchlibrosa STFT kernels and mel matrix and returns only the
    network keys."""
    pytest.importorskip("torchlibrosa", reason="test extra: torchlibrosa")
    state = _torchlibrosa_frontend_state()
    state["fc1.bias"] = torch.zeros(2048)
    rest = cnn14.strip_frontend(state, frontend=MODELS["cnn14"].frontend, source="ckpt.pth")
    assert list(rest) == ["fc1.bias"]


@pytest.mark.parametrize(
    "key, change",
    [
        ("logmel_extractor.melW", lambda w: w * 1.01),
        ("spectrogram_extractor.stft.conv_real.weight", lambda w: w.roll(1, dims=2)),
        ("logmel_extractor.melW", lambda w: w[:, :32]),
    ],
)
def test_frontend_weights_of_another_frontend_are_refused(key: str, change) -> None:
    """A checkpoint whose mel matrix or STFT kernels differ from calitag's frontend raises
    CheckpointError naming the key."""
    pytest.importorskip("torchlibrosa", reason="test extra: torchlibrosa")
    state = _torchlibrosa_frontend_state()
    state[key] = change(state[key])
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        cnn14.strip_frontend(state, frontend=MODELS["cnn14"].frontend, source="ckpt.pth")


def test_checkpoint_with_wrong_keys_and_shapes_is_refused(tmp_path: Path) -> None:
    """Missing, unknown and misshapen weights raise CheckpointError naming them."""
    path = tmp_path / "other.pth"
    torch.save(
        {"model": {"fc_audioset.weight": torch.zeros(10, 2048), "head.weight": torch.zeros(3)}},
        path,
    )
    with pytest.raises(
        CheckpointError,
        match=r"missing keys.*unexpected keys.*head\.weight.*fc_audioset\.weight \(10, 2048\)",
    ):
        cnn14.load(path)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    """Loading uses weights_only=True: a checkpoint holding objects raises CheckpointError."""
    path = tmp_path / "pickled.pth"
    torch.save({"model": {"fc1.bias": torch.zeros(2048)}, "config": np.random.default_rng(0)}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        cnn14.load(path)


def test_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    """A checkpoint path that does not exist raises CheckpointError naming it."""
    with pytest.raises(CheckpointError, match="nothere.pth not found"):
        cnn14.load(tmp_path / "nothere.pth")


@pytest.mark.slow
def test_random_weights_follow_the_seed() -> None:
    """load(None, seed=s) draws the same weights for the same seed and others for another."""
    a, b, c = (cnn14.load(None, seed=s) for s in (0, 0, 1))
    assert not a.training
    assert torch.equal(a.fc_audioset.weight, b.fc_audioset.weight)
    assert torch.equal(a.conv_block1.conv1.weight, b.conv_block1.conv1.weight)
    assert not torch.equal(a.fc_audioset.weight, c.fc_audioset.weight)


def test_bad_features_raise_audio_error(features: torch.Tensor) -> None:
    """Features with another mel count or fewer than 32 frames raise AudioError; the clip-level
    model has no frame output."""
    model = cnn14.Cnn14().eval()
    with torch.inference_mode():
        with pytest.raises(AudioError, match=r"\(batch, 64, n_frames\)"):
            model(features[:, :40])
        with pytest.raises(AudioError, match="at least 32 frames, got 31"):
            model(features[:, :, :31])
        with pytest.raises(AudioError, match="no frame output"):
            model.forward_frames(features)


def test_inference_copy_gives_the_eager_scores_and_leaves_the_model(features: torch.Tensor) -> None:
    """The inference copy (batch norms folded, channels-last, the 2-bin block as a matmul) gives the
    eager clip and frame scores of a 2-clip batch within 1e-5, and the model keeps its checkpoint state."""
    model = cnn14.load(None, seed=3, decision_level=True)
    _randomise_batchnorm(model, seed=4)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fast = model.inference_copy(matmul_widths=(2,))
    assert fast.conv_block6.conv2.as_matmul and fast.conv_block1.conv1.as_matmul
    assert not fast.conv_block3.conv1.as_matmul and not fast.conv_block5.conv2.as_matmul
    assert fast.conv_block3.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = torch.cat([features, features.roll(50, dims=2)])
    with torch.inference_mode():
        clip, frames = model.forward_frames(batch)
        fast_clip, fast_frames = fast.forward_frames(batch)
    assert float(clip.std()) > 1e-3
    assert float((fast_clip - clip).abs().max()) <= 1e-5
    assert float((fast_frames - frames).abs().max()) <= 1e-5
    state = model.state_dict()
    assert list(state) == list(before)
    assert all(torch.equal(state[key], before[key]) for key in before)
    assert isinstance(model.conv_block6, cnn14.ConvBlock)


def test_fused_matmul_convolution_equals_conv2d() -> None:
    """A fused 3x3 convolution run as a matmul equals conv2d + batch norm + ReLU on channels-last and contiguous input."""
    generator = torch.Generator().manual_seed(0)
    block = cnn14.ConvBlock(8, 16, pool=(1, 1)).eval()
    _randomise_batchnorm(block, seed=5)
    with torch.no_grad():
        block.conv1.weight.copy_(torch.randn(block.conv1.weight.shape, generator=generator))
    x = torch.randn(3, 8, 11, 2, generator=generator)
    with torch.inference_mode():
        expected = torch.relu(block.bn1(block.conv1(x)))
        for as_matmul in (True, False):
            conv = cnn14.FusedConv3x3(block.conv1, block.bn1, dtype=torch.float32, as_matmul=as_matmul)
            for inp in (x, x.contiguous(memory_format=torch.channels_last)):
                assert float((conv(inp) - expected).abs().max()) <= 1e-4 * float(expected.abs().max())


def test_matmul_probe_is_measured_once_and_leaves_the_convolution() -> None:
    """The probe that picks matmul or convolution per shape answers a bool, caches it, and leaves the layer as it was."""
    block = cnn14.ConvBlock(16, 16, pool=(1, 1)).eval()
    conv = cnn14.FusedConv3x3(block.conv2, block.bn2, dtype=torch.float32)
    cnn14._MATMUL_PAYS.clear()
    answer = cnn14.matmul_pays(conv, width=2)
    assert isinstance(answer, bool) and not conv.as_matmul
    assert list(cnn14._MATMUL_PAYS.values()) == [answer]
    cnn14._MATMUL_PAYS[next(iter(cnn14._MATMUL_PAYS))] = not answer  # a cached answer is not measured again
    assert cnn14.matmul_pays(conv, width=2) is (not answer)
    fused = cnn14.FusedConvBlock(block, width=2, dtype=torch.float32)
    assert fused.conv2.as_matmul is (not answer)
    assert not cnn14.FusedConvBlock(block, width=16, dtype=torch.float32).conv2.as_matmul  # too wide to ask
    cnn14._MATMUL_PAYS.clear()
