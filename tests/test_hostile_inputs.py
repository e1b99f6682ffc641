"""Hostile input files: endless or special files, arrays that claim more than they hold, huge numbers, solver bounds."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from calitag._fileio import load_arrays, read_input
from calitag.errors import CalibrationError, LabelsError, OutputError, ScoresError, ThresholdsError
from calitag.pipeline.calibrate import CalibrationOptions, ScoreCache, ScoredFiles, gather_clip_scores
from calitag.pipeline.labels import as_clip_labels, read_clip_labels
from calitag.thresholds import fit
from calitag.thresholds.index import ScoreIndex
from calitag.thresholds.io import Thresholds, load_postprocess
from calitag.thresholds.scorefiles import read_scores

HUGE = (10**6, 10**6)


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A .npy header declaring ``shape`` of float64, followed by 64 bytes of data."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 64


# --- endless and special files -----------------------------------------------------------------


@pytest.mark.parametrize(("reader", "name"), [(read_clip_labels, "labels.csv"), (Thresholds.load, "th.json"),
                                             (load_postprocess, "events.json"), (read_scores, "scores.csv")])
def test_device_files_are_refused_without_reading(tmp_path, reader, name):
    """/dev/zero (behind a file name) as a label, thresholds, post-processing or score file is refused, not read forever."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    link = tmp_path / name
    link.symlink_to("/dev/zero")
    with pytest.raises((LabelsError, ThresholdsError, ScoresError), match="it is a device; expected a regular file"):
        reader(link)


def test_fifo_without_writer_is_refused_not_waited_on(tmp_path):
    """A FIFO with no writer given as a label file is refused in well under a second instead of blocking."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_clip_labels(fifo)
        except BaseException as err:  # noqa: BLE001 (handed to the test thread)
            outcome.append(err)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        with open(fifo, "wb"):  # release the blocked reader before failing
            pass
        pytest.fail("reading a FIFO without a writer blocked")
    assert isinstance(outcome[0], LabelsError) and "FIFO" in str(outcome[0])


def test_input_over_the_size_limit_is_refused(tmp_path):
    """A file over the reader's limit is refused with its size, not read."""
    big = tmp_path / "labels.csv"
    big.write_bytes(b"a.wav,Speech\n" * 100)
    with pytest.raises(LabelsError, match="larger than 1000 bytes"):
        read_input(big, what="label file", error=LabelsError, max_bytes=1000)


# --- arrays that claim more than they hold -------------------------------------------------------


def test_npy_declaring_a_huge_matrix_is_refused_before_allocating(tmp_path):
    """A 192-byte .npy declaring 10^6 x 10^6 float64 (7.3 TiB) is refused naming the shape, without a MemoryError."""
    path = tmp_path / "scores.npy"
    path.write_bytes(_npy_header_only(HUGE))
    assert path.stat().st_size == 192
    tracemalloc.start()
    try:
        with pytest.raises(ScoresError, match=r"declares an array of shape \(1000000, 1000000\) \(7.3 TiB\)"):
            read_scores(path)
        assert tracemalloc.get_traced_memory()[1] < 50 << 20
    finally:
        tracemalloc.stop()


def test_npz_member_declaring_a_huge_matrix_is_refused(tmp_path):
    """An .npz whose val_scores header declares 10^6 x 10^6 is refused, naming the array."""
    path = tmp_path / "scores.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("val_scores.npy", _npy_header_only(HUGE))
    with pytest.raises(ScoresError, match="array 'val_scores'.*declares an array of shape"):
        read_scores(path)


def test_npz_that_inflates_past_the_limit_is_refused_before_inflating(tmp_path):
    """An .npz of zeros that would inflate past the array limit is refused from its zip sizes, before decompression."""
    path = tmp_path / "bomb.npz"
    n = 8 << 20  # 64 MiB of float64 zeros, ~65 KB compressed
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("val_scores.npy", "w") as member:
            npy_format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
            member.write(bytes(n * 8))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ScoresError, match="holds 64.0 MiB of arrays, more than the 32.0 MiB"):
            load_arrays(path, what="score file", error=ScoresError, max_bytes=32 << 20)
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()


def test_object_arrays_are_refused(tmp_path):
    """An .npy of Python objects (a pickle) is refused as such."""
    path = tmp_path / "scores.npy"
    np.save(path, np.array([{}, {}], dtype=object), allow_pickle=True)
    with pytest.raises(ScoresError, match="Python objects"):
        read_scores(path)


def test_score_cache_declaring_a_huge_matrix_is_unreadable_not_a_memory_error(tmp_path):
    """A score cache whose header lies is a ScoresError for a report, and an ignored cache when scoring."""
    path = tmp_path / "th.debug.scores.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("scores.npy", _npy_header_only(HUGE))
        archive.writestr("keys.npy", _npy_header_only((3,)))
    with pytest.raises(ScoresError, match="declares an array"):
        ScoreCache.read(path, ("a",))
    assert ScoreCache.reuse(path, ("a",)).rows == {}


def test_wide_score_csv_is_read_into_one_float_matrix(tmp_path):
    """A score CSV of 20,000 columns is read with about 8 bytes a cell (no list of Python floats per row)."""
    path = tmp_path / "wide.csv"
    values = np.random.default_rng(0).random((10, 20_000)).round(3)
    np.savetxt(path, values, delimiter=",", fmt="%.3f")
    tracemalloc.start()
    try:
        data = read_scores(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(data.val_scores, values)
    assert peak < 10 * path.stat().st_size


# --- score files: encodings and names ------------------------------------------------------------


def test_score_csv_with_a_bom_gives_clean_class_names(tmp_path):
    """A score CSV saved with a UTF-8 BOM (Excel) names its first class 'a', not '\\ufeffa'."""
    path = tmp_path / "scores.csv"
    path.write_bytes("\ufeffa,b\n0.1,0.9\n0.8,0.2\n".encode())
    assert read_scores(path).class_names == ("a", "b")


def test_npz_with_bytes_class_names_decodes_them(tmp_path):
    """An .npz whose classes array holds bytes gives the names 'a', 'b', not "b'a'"."""
    path = tmp_path / "scores.npz"
    np.savez(path, val_scores=np.array([[0.1, 0.9], [0.8, 0.2]]), val_labels=np.array([[0, 1], [1, 0]]),
             classes=np.array([b"a", b"b"]))
    assert read_scores(path).class_names == ("a", "b")


def test_binary_score_csv_is_one_error(tmp_path):
    """A binary file named .csv is a ScoresError, not a UnicodeDecodeError or csv.Error traceback."""
    path = tmp_path / "scores.csv"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ScoresError, match="not UTF-8 text"):
        read_scores(path)


@pytest.mark.parametrize("kind", ["npz", "binary"])
def test_calibrate_scores_refuses_an_npz_or_binary_file(tmp_path, kind):
    """`calibrate --scores` given an .npz score file or any binary file says what it is in one OutputError."""
    path = tmp_path / ("scores.npz" if kind == "npz" else "scores.jsonl")
    if kind == "npz":
        np.savez(path, val_scores=np.zeros((2, 2)), val_labels=np.zeros((2, 2)))
    else:
        path.write_bytes(b"\x00\xff\xfe" + bytes(range(256)) * 4)
    with pytest.raises(OutputError, match="numpy array file" if kind == "npz" else "binary file"):
        ScoredFiles.read(path, model="debug", class_names=("a", "b"))


# --- label files -----------------------------------------------------------------------------------


def test_label_cell_over_the_csv_field_limit_is_one_error(tmp_path):
    """A label cell over 131,072 characters is a LabelsError naming the file and line, not a _csv.Error."""
    path = tmp_path / "labels.csv"
    path.write_text('filename,labels\na.wav,Speech\nb.wav,"' + "x" * 200_000 + '"\n')
    with pytest.raises(LabelsError, match=r"labels.csv, line 3: field larger than field limit"):
        read_clip_labels(path)


@pytest.mark.parametrize("spelling", ["./speech_01.wav", "sub/../speech_01.wav"])
def test_a_file_listed_under_two_spellings_is_refused(tmp_path, spelling):
    """A label file listing speech_01.wav and ./speech_01.wav is refused, naming both lines."""
    path = tmp_path / "labels.csv"
    path.write_text(f"filename,labels\nspeech_01.wav,Speech\n{spelling},Music\n")
    with pytest.raises(LabelsError, match=rf"line 3: {spelling} is listed twice \(as speech_01.wav on line 2\)"):
        read_clip_labels(path)


def test_a_mapping_listing_a_file_under_two_spellings_is_refused():
    """The Python mapping form refuses the same file under two spellings too."""
    with pytest.raises(LabelsError, match="listed twice"):
        as_clip_labels({"a.wav": ["Speech"], "./a.wav": ["Music"]})


class _NoScoring:
    """A tagger stand-in: the checks under test run before anything is scored."""

    name = "debug"
    class_names = ("Speech",)


@pytest.mark.parametrize("outside", ["absolute", "parent"])
def test_label_names_outside_the_folder_are_refused(audio_samples, tmp_path, outside):
    """A label-file name that leads out of FOLDER (an absolute path elsewhere, ../) is refused before scoring."""
    stray = audio_samples / "speech_02.wav"
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "speech_01.wav").write_bytes((audio_samples / "speech_01.wav").read_bytes())
    name = str(stray) if outside == "absolute" else f"../{stray.name}"
    if outside == "parent":
        (tmp_path / stray.name).write_bytes(stray.read_bytes())
    labels = as_clip_labels({"speech_01.wav": ["Speech"], name: ["Speech"]})
    with pytest.raises(LabelsError, match=f"{name} is not in {folder}"):
        gather_clip_scores(_NoScoring(), folder, labels, scored=None, cache=ScoreCache(None, ("Speech",)),
                           checkpoint_sha256=None, options=CalibrationOptions())


def test_skip_missing_with_many_absent_files_is_linear(tmp_path):
    """--skip-missing over 100,000 listed files, all absent, sets them aside in seconds (was quadratic)."""
    labels = as_clip_labels({f"absent_{i}.wav": ["Speech"] for i in range(100_000)})
    start = time.perf_counter()
    clips = gather_clip_scores(_NoScoring(), tmp_path, labels, scored=None, cache=ScoreCache(None, ("Speech",)),
                               checkpoint_sha256=None, options=CalibrationOptions(skip_missing=True))
    assert time.perf_counter() - start < 20
    assert len(clips.missing) == 100_000 and clips.names == ()


# --- thresholds and post-processing JSON -------------------------------------------------------------


def _thresholds_text(value: str, *, key: str = "thresholds") -> str:
    document = Thresholds.uniform(("a", "b"), model="debug").to_dict()
    text = json.dumps(document)
    marker = json.dumps(document[key])
    replaced = f"[{value}, 0.5]" if key == "thresholds" else value
    return text.replace(f'"{key}": {marker}', f'"{key}": {replaced}')


@pytest.mark.parametrize(("value", "shown"), [("1e400", "1e400"), ("9" * 5000, "5000 characters"),
                                               ("-" + "1" * 400, "401 characters")])
@pytest.mark.parametrize("loader", ["thresholds", "postprocess"])
def test_out_of_range_numbers_are_one_error_naming_the_key(tmp_path, value, shown, loader):
    """1e400, a 5,000-digit or a 400-digit integer in a thresholds file is a ThresholdsError naming file and key."""
    path = tmp_path / "th.json"
    path.write_text(_thresholds_text(value))
    load = Thresholds.load if loader == "thresholds" else load_postprocess
    with pytest.raises(ThresholdsError, match=rf"th.json: thresholds\[0\] is .*{shown}.*out of range"):
        load(path)


def test_out_of_range_number_in_an_events_section_names_its_key(tmp_path):
    """A kernel_frames of 1e400 inside an events section names events.classes.a.kernel_frames."""
    events = {"classes": {"a": {"kernel_frames": "HUGE", "threshold": 0.5}}}
    path = tmp_path / "events.json"
    path.write_text(json.dumps({"events": events}).replace('"HUGE"', "1e400"))
    with pytest.raises(ThresholdsError, match=r"events.classes.a.kernel_frames is 1e400"):
        load_postprocess(path)


# --- solver bounds -----------------------------------------------------------------------------------


def _wide_problem(n_clips: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    scores = rng.random((n_clips, n_classes))
    return scores, scores > rng.random(n_classes)


def test_numeric_time_bound_holds_inside_an_iteration():
    """numeric with max_seconds=0.2 on 3,000 classes (one iteration takes far longer) stops within a second or two."""
    scores, labels = _wide_problem(40, 3000)
    start = time.perf_counter()
    fitted = fit(scores, labels, method="numeric", max_seconds=0.2, init=0.5)
    assert time.perf_counter() - start < 3.0
    assert fitted.validation["iterations_done"] == 0


def test_heuristic_has_a_time_bound():
    """heuristic takes max_seconds, and stops near it with the best values found so far."""
    scores, labels = _wide_problem(40, 3000)
    start = time.perf_counter()
    fitted = fit(scores, labels, method="heuristic", max_seconds=0.2)
    assert time.perf_counter() - start < 3.0
    assert fitted.options["max_seconds"] == 0.2


def test_sgl_index_memory_per_class_is_bounded(monkeypatch):
    """Building the SGL index peaks under 32 KB a class (its tables take 24 KB; the positives go by blocks of classes).

    Blocks of 64 classes here, so that 3,000 classes show what the default 1,024 gives at 100,000.
    """
    import calitag.thresholds.index as index

    monkeypatch.setattr(index, "BLOCK_CLASSES", 64, raising=False)
    scores, labels = _wide_problem(20, 3000)
    scores = scores.astype(np.float32)
    tracemalloc.start()
    try:
        ScoreIndex.build(scores, labels, slope=50.0, grid_step_z=0.05, workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / 3000 < 32 << 10


def test_sgl_index_over_the_memory_limit_is_refused_before_allocating(monkeypatch):
    """An index larger than MAX_INDEX_BYTES is a CalibrationError giving the size, raised before allocating it."""
    import calitag.thresholds.index as index

    monkeypatch.setattr(index, "MAX_INDEX_BYTES", 1 << 20)
    scores, labels = _wide_problem(20, 200)
    with pytest.raises(CalibrationError, match=r"index of 200 classes x 20 clips .* needs 5 MiB, more than the 1 MiB"):
        fit(scores, labels)


@pytest.mark.parametrize("options", [{"slope": 1e308}, {"slope": 1e308, "engine": "autograd"},
                                     {"beta": 1e308, "objective": "micro_fbeta"},
                                     {"beta": 1e308, "objective": "macro_fbeta", "method": "exact"}])
def test_huge_finite_slope_or_beta_is_a_calibration_error(options):
    """A finite but huge --slope or --beta (1e308) is a CalibrationError with the bound, not an OverflowError."""
    scores, labels = _wide_problem(30, 3)
    with pytest.raises(CalibrationError, match="at most 1e\\+06"):
        fit(scores, labels, **options)
