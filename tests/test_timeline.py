"""Timelines of long recordings: per-segment scores (Tagger.segment_scores, `tag/batch --segment-s`) and
YAMNet's patch scores as frame scores (`detect --model yamnet`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import AudioError
from calitag.pipeline.audio import load_audio
from calitag.pipeline.tagger import Tagger

CLIP = "speech_01.wav"  # 3.205 s at 16 kHz


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    """The random-weight debug model on the CPU (16 kHz)."""
    return Tagger.load("debug", device="cpu")


@pytest.mark.torch
def test_segments_cover_the_file_and_score_like_cut_clips(tagger, audio_samples):
    """1-s segments of a 3.2-s clip are 0-1, 1-2, 2-3, 3-3.205 s, each scored as that piece alone."""
    path = audio_samples / CLIP
    timeline = tagger.segment_scores(path, segment_s=1.0)
    np.testing.assert_allclose(timeline.starts_s, [0, 1, 2, 3])
    np.testing.assert_allclose(timeline.ends_s, [1, 2, 3, 3.205])
    samples = load_audio(path, sample_rate=16_000).samples
    pieces = [samples[i * 16_000 : (i + 1) * 16_000] for i in range(4)]
    np.testing.assert_allclose(timeline.probs, tagger.scores(pieces).probs, atol=1e-6)


@pytest.mark.torch
def test_segments_of_an_array_equal_those_of_its_file(tagger, audio_samples):
    """An in-memory recording gives the same timeline as the file it was read from."""
    path = audio_samples / CLIP
    from_file = tagger.segment_scores(path, segment_s=0.7)
    from_array = tagger.segment_scores(load_audio(path, sample_rate=16_000).samples, segment_s=0.7)
    np.testing.assert_array_equal(from_file.probs, from_array.probs)
    np.testing.assert_array_equal(from_file.ends_s, from_array.ends_s)


@pytest.mark.torch
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_segment_length_must_be_positive_and_finite(tagger, audio_samples, bad):
    """A segment length of 0, negative, NaN or inf raises AudioError naming it."""
    with pytest.raises(AudioError, match="segment_s must be a positive number"):
        tagger.segment_scores(audio_samples / CLIP, segment_s=bad)


@pytest.mark.torch
def test_cli_tag_segments_json(audio_samples):
    """`tag --segment-s 1 --format json` gives one entry per segment with start, end and tags."""
    result = CliRunner().invoke(main, ["tag", str(audio_samples / CLIP), "--model", "debug", "--device", "cpu",
                                       "--segment-s", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert [(s["start_s"], s["end_s"]) for s in record["segments"]] == [(0, 1), (1, 2), (2, 3), (3, 3.205)]
    assert all(isinstance(s["tags"], list) for s in record["segments"])


@pytest.mark.torch
def test_cli_batch_segments_jsonl(audio_samples, tmp_path):
    """`batch --segment-s 2` writes records whose segments tile the file's duration."""
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(main, ["batch", str(audio_samples), "--glob", "speech_0[12].wav", "--out", str(out),
                                       "--model", "debug", "--device", "cpu", "--segment-s", "2"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        segments = record["segments"]
        assert segments[0]["start_s"] == 0 and segments[-1]["end_s"] == record["duration_s"]
        assert all(a["end_s"] == b["start_s"] for a, b in zip(segments, segments[1:]))


def test_yamnet_frame_scores_are_its_patch_scores(audio_samples, yamnet_cached):
    """YAMNet's frame scores come every 0.48 s and equal its own per-patch scores of the whole clip."""
    tagger = Tagger.load("yamnet", device="cpu")
    path = audio_samples / "speech_01.wav"
    frames = tagger.frame_scores(path)
    assert frames.frame_hop_s == pytest.approx(0.48)
    samples = load_audio(path, sample_rate=16_000).samples
    patches = np.asarray(tagger.model.forward_patches(tagger.frontend(samples[None])))[0]
    n = min(len(patches), len(frames.probs)) - 1  # the last frame comes from an end-aligned window
    np.testing.assert_allclose(frames.probs[:n], patches[:n], atol=1e-6)


def test_cli_detect_with_yamnet(audio_samples, yamnet_cached, tmp_path):
    """`detect --model yamnet` writes events of the speech clip, Speech among them."""
    out = tmp_path / "events.tsv"
    result = CliRunner().invoke(main, ["detect", str(audio_samples / "speech_01.wav"), "--model", "yamnet",
                                       "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "\tSpeech" in out.read_text()
