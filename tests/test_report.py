"""The HTML calibration report (thresholds/html_report.py, pipeline/report.py, `calibrate --report`,
`thresholds report`), checked as text and rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import LabelsError, OutputError, ScoresError
from calitag.thresholds import Thresholds, evaluate, fit
from calitag.thresholds.html_report import is_report, report, write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _figures(text: str) -> list[str]:
    return re.findall(r"<figure class='plot[^']*' data-kind='(\w+)'", text)


def _table_rows(text: str) -> list[list[str]]:
    """The data-v values of each row of the per-class table."""
    body = text.split("id='class-table'")[1].split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"data-v='([^']*)'|data-v=\"([^\"]*)\"", row) for row in body.split("<tr")[1:]]


@pytest.fixture(scope="module")
def dcase2017():
    """Seeded scores and labels shaped like DCASE2017 task 4 (17 classes), thresholds fitted by SGL on a val half."""
    from calitag.thresholds.synthetic import synthetic_scores

    scores, targets = synthetic_scores(1591, 17, seed=0)
    thresholds = fit(scores[:488], targets[:488], method="sgl", init=0.3,
                     class_names=tuple(f"class {i}" for i in range(17)))
    return scores[488:], targets[488:].astype(bool), thresholds


def test_report_is_one_self_contained_page(dcase2017):
    """The page loads nothing from elsewhere: figures are data URIs and the only script is inline."""
    scores, labels, thresholds = dcase2017
    text = report(scores, labels, thresholds, default=0.3, meta={"model": "cnn-transformer"})
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)=['\"](https?:|//)", text)
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"<img [^>]*src='([^']*)'", text))
    assert is_report_text(text)


def is_report_text(text: str) -> bool:
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as handle:
        handle.write(text)
    try:
        return is_report(handle.name)
    finally:
        Path(handle.name).unlink()


def test_report_has_one_figure_per_labelled_class_and_the_exact_metrics(dcase2017):
    """One figure per class with positives plus the summary; table P/R/F1 equal evaluate() both ways."""
    scores, labels, thresholds = dcase2017
    labels = labels.copy()
    labels[:, 16] = False  # a class without positives: in the table, without a figure
    text = report(scores, labels, thresholds, default=0.3)
    kinds = _figures(text)
    assert kinds.count("summary") == 1 and kinds.count("class") == 16
    before, after = evaluate(scores, labels, 0.3), evaluate(scores, labels, thresholds)
    rows = {cells[0][0]: [float(a or b) if (a or b) else np.nan for a, b in cells[1:]] for cells in _table_rows(text)}
    assert len(rows) == 17
    for i in range(17):
        support, default, fitted, moved, p0, r0, f0, p1, r1, f1, change, ap = rows[f"class {i}"][:12]
        assert support == before.support[i]
        assert fitted == pytest.approx(thresholds.values[i], abs=1e-5) and default == 0.3
        assert (p0, r0, f0) == pytest.approx((before.precision[i], before.recall[i], before.f1[i]), abs=1e-5)
        assert (p1, r1, f1) == pytest.approx((after.precision[i], after.recall[i], after.f1[i]), abs=1e-5)
        assert np.isnan(ap) == (i == 16)
    assert f"{before.micro_f1:.3f}" in text and f"{after.micro_f1:.3f}" in text


def test_report_shows_given_intervals_gain_verdict_and_guard(dcase2017):
    """Intervals and paired gains are taken duck-typed; the guard's cell shows the thresholds file's word with its reason."""
    scores, labels, thresholds = dcase2017

    class Gain:
        gain = {"value": 0.031, "low": 0.012, "high": 0.05, "level": 0.95}

        def verdict(self) -> str:
            return "micro-F1 +3.1 points [+1.2, +5.0]"

    interval = {"value": 0.59, "low": 0.55, "high": 0.63}
    text = report(scores, labels, thresholds, default=0.3,
                  intervals={"default": {"micro_f1": interval}, "calibrated": {"micro_f1": interval}},
                  gains={"micro_f1": Gain()}, guard={"class 3": {"kept": "fallback", "positives": 2,
                                                                 "reason": "did not beat 0.3 in cross-validation"},
                                                     "class 4": {"kept": "default", "positives": 1}})
    assert "0.590 [0.550, 0.630]" in text and "+3.1 [+1.2, +5.0] points" in text
    assert "micro-F1 +3.1 points [+1.2, +5.0]" in text and "95% intervals" in text
    row = next(r for r in text.split("<tr") if ">class 3<" in r)
    assert ">fallback<" in row and ">default<" not in row and "did not beat 0.3" in row
    row = next(r for r in text.split("<tr") if ">class 4<" in r)
    assert ">default<" in row and "the fit did not beat the default" in row


def test_report_refuses_mismatched_inputs(dcase2017):
    """Labels of another shape, or thresholds for other classes, raise ScoresError naming the problem."""
    scores, labels, thresholds = dcase2017
    with pytest.raises(ScoresError, match="shape"):
        report(scores, labels[:, :5], thresholds)
    with pytest.raises(ScoresError, match="no class 'bird'"):
        report(scores, labels, thresholds, class_names=["bird"] + [f"class {i}" for i in range(1, 17)])


@pytest.mark.slow
def test_500_class_report_stays_under_10_mb():
    """A 500-class report with a figure for every class is under 10 MB (synthetic AudioSet-sized data)."""
    rng = np.random.default_rng(0)
    n, c = 3000, 500
    labels = rng.random((n, c)) < rng.uniform(0.003, 0.05, c)
    scores = np.where(labels, rng.beta(4, 2, (n, c)), rng.beta(1.2, 6, (n, c)))
    text = report(scores, labels, rng.uniform(0.1, 0.6, c), class_names=[f"class {i}" for i in range(c)])
    assert _figures(text).count("class") == int(labels.any(axis=0).sum()) > 490
    assert len(text.encode()) < 10e6


def test_write_report_replaces_only_reports(tmp_path, dcase2017):
    """An earlier report is replaced; any other existing file only with force."""
    scores, labels, thresholds = dcase2017
    text = report(scores[:200], labels[:200], thresholds)
    out = tmp_path / "report.html"
    write_report(out, text)
    write_report(out, text)  # its own kind: replaced
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    with pytest.raises(OutputError, match="not a calitag report"):
        write_report(notes, text)
    assert notes.read_text() == "<html>my notes</html>"
    write_report(notes, text, force=True)
    assert is_report(notes)


# --- pipeline/report.py: the report's inputs from batch output and the score cache ----------------

STUB_CLASSES = ("Speech", "Music", "Dog")


def _stub_batch(tmp_path: Path) -> tuple[list[dict], Path, Thresholds]:
    """All-scores records of a stub model (4-decimal scores), a label file in other paths' terms, thresholds."""
    rng = np.random.default_rng(1)
    records = [{"path": f"/rec/clips/{i:02d}.wav", "duration_s": 1.0, "tags": [], "model": "stub",
                "scores": {c: round(float(v), 4) for c, v in zip(STUB_CLASSES, rng.random(3))}} for i in range(12)]
    records.append({"path": "/rec/clips/bad.wav", "model": "stub", "error": "not audio"})
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,labels\n" + "".join(f"clips/{i:02d}.wav,{'Speech' if i % 2 else 'Music'}\n"
                                                    for i in range(12)) + "bad.wav,Speech\nghost.wav,Dog\n")
    thresholds = Thresholds(values=np.array([0.5, 0.4, 0.6]), class_names=STUB_CLASSES, model="stub",
                            options={"calibrated_classes": ["Speech", "Music"]})
    return records, labels, thresholds


def _expected_inputs(records: list[dict]) -> np.ndarray:
    return np.array([[r["scores"]["Speech"], r["scores"]["Music"]] for r in records[:12]], dtype=np.float32)


def test_report_inputs_from_jsonl_batch_output(tmp_path):
    """JSONL batch output: labelled clips matched by path suffix, failed and absent ones left out and counted."""
    from calitag.pipeline.report import read_report_inputs

    records, labels, thresholds = _stub_batch(tmp_path)
    batch = tmp_path / "out.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in records))
    inputs = read_report_inputs(thresholds, batch, labels=labels)
    assert inputs.class_names == ("Speech", "Music")
    np.testing.assert_array_equal(inputs.scores, _expected_inputs(records).astype(np.float64))
    assert inputs.targets[:, 0].tolist() == [bool(i % 2) for i in range(12)]
    assert "all 12 labelled clips" in inputs.description and "2 listed clip(s) without scores" in inputs.description


def test_report_inputs_from_parquet_batch_output(tmp_path):
    """A Parquet batch output gives the report the same clips and scores as JSONL (one reader for all formats)."""
    pytest.importorskip("pyarrow", reason="Parquet needs pyarrow: pip install 'calitag[parquet]'")
    from calitag.pipeline.records import ParquetWriter
    from calitag.pipeline.report import read_report_inputs

    records, labels, thresholds = _stub_batch(tmp_path)
    parquet = tmp_path / "out.parquet"
    with ParquetWriter(parquet, class_names=STUB_CLASSES, model="stub", all_scores=True) as writer:
        for record in records:
            writer.write(record)
    inputs = read_report_inputs(thresholds, parquet, labels=labels)
    assert inputs.class_names == ("Speech", "Music") and "2 listed clip(s) without scores" in inputs.description
    np.testing.assert_array_equal(inputs.scores, _expected_inputs(records).astype(np.float64))


def test_report_inputs_from_csv_batch_output(tmp_path):
    """A CSV batch output (4-decimal scores) gives the report the same clips and scores as JSONL."""
    from calitag.pipeline.records import CSV_HEADER, FORMATTERS
    from calitag.pipeline.report import read_report_inputs

    records, labels, thresholds = _stub_batch(tmp_path)
    csv_out = tmp_path / "out.csv"
    csv_out.write_bytes(CSV_HEADER.encode() + b"".join(FORMATTERS["csv"](r) for r in records))
    inputs = read_report_inputs(thresholds, csv_out, labels=labels)
    assert inputs.class_names == ("Speech", "Music") and "2 listed clip(s) without scores" in inputs.description
    np.testing.assert_allclose(inputs.scores, _expected_inputs(records), atol=1e-7)


def test_report_inputs_refuse_another_models_output_and_ambiguous_names(tmp_path):
    """Batch output of another model is refused; a name matching two records asks for --folder."""
    from calitag.pipeline.report import read_report_inputs

    records, labels, thresholds = _stub_batch(tmp_path)
    batch = tmp_path / "out.jsonl"
    batch.write_text("".join(json.dumps({**r, "model": "other"}) + "\n" for r in records))
    with pytest.raises(OutputError, match="'other', not 'stub'"):
        read_report_inputs(thresholds, batch, labels=labels)
    twice = [*records, {**records[0], "path": "/elsewhere/clips/00.wav"}]
    batch.write_text("".join(json.dumps(r) + "\n" for r in twice))
    with pytest.raises(LabelsError, match="clips/00.wav matches 2 recorded files.*pass --folder"):
        read_report_inputs(thresholds, batch, labels=labels)
    with pytest.raises(ScoresError, match="cannot read batch output .*gone.jsonl: no such file"):
        read_report_inputs(thresholds, tmp_path / "gone.jsonl", labels=labels)


def test_report_inputs_from_the_score_cache_by_file_content(tmp_path):
    """A calibrate score cache gives the rows of the folder's listed files by content; other classes are refused."""
    from calitag.models.checkpoints import file_digests
    from calitag.pipeline.calibrate import ScoreCache
    from calitag.pipeline.report import read_report_inputs

    folder = tmp_path / "clips"
    folder.mkdir()
    cache = ScoreCache(tmp_path / "th.stub.scores.npz", STUB_CLASSES)
    for i in range(4):
        (folder / f"{i}.wav").write_bytes(bytes([i]) * 10)
        cache.rows[f"stub:none:{file_digests(folder / f'{i}.wav')[0]}"] = np.array([i / 10, 0.5, 0.9], np.float32)
    cache.save()
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,labels\n0.wav,Speech\n1.wav,Music\n2.wav,Speech\n3.wav,Music\n4.wav,Dog\n")
    thresholds = Thresholds(values=np.full(3, 0.5), class_names=STUB_CLASSES, model="stub")
    inputs = read_report_inputs(thresholds, cache.path, labels=labels, folder=folder)
    assert inputs.class_names == ("Speech", "Music")
    np.testing.assert_allclose(inputs.scores[:, 0], [0.0, 0.1, 0.2, 0.3], atol=1e-7)
    assert "1 listed clip(s) without scores" in inputs.description
    other = Thresholds(values=np.full(2, 0.5), class_names=STUB_CLASSES[:2], model="stub")
    with pytest.raises(ScoresError, match="made for another model"):
        read_report_inputs(other, cache.path, labels=labels, folder=folder)


# --- the commands, on the debug model (offline) -------------------------------------------------


@pytest.fixture(scope="module")
def speech_music(tmp_path_factory, audio_samples) -> tuple[Path, Path]:
    """The bundled clips with their Speech/Music labels (the debug model's classes)."""
    root = tmp_path_factory.mktemp("report")
    folder = root / "clips"
    folder.mkdir()
    rows = ["filename,labels"]
    for line in (audio_samples / "labels.csv").read_text().splitlines()[1:]:
        name, labels = line.split(",")[:2]
        shutil.copy(audio_samples / name, folder / name)
        rows.append(f"{name},{';'.join(l for l in labels.split(';') if l in ('Speech', 'Music'))}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder, root / "labels.csv"


@pytest.mark.torch
def test_calibrate_report_and_thresholds_report_from_cache_and_batch(speech_music, tmp_path):
    """`calibrate --report` writes a report; `thresholds report` reads the score cache and batch output alike."""
    folder, labels = speech_music
    runner = CliRunner()
    th, html = tmp_path / "th.json", tmp_path / "cal.html"
    result = runner.invoke(main, ["calibrate", str(folder), "--labels", str(labels), "--model", "debug",
                                  "--out", str(th), "--report", str(html), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert is_report(html) and _figures(html.read_text()).count("summary") == 1
    cache = tmp_path / "th.debug.scores.npz"
    from_cache = tmp_path / "cache.html"
    result = runner.invoke(main, ["thresholds", "report", str(th), str(cache), "--out", str(from_cache)])
    assert result.exit_code == 0, result.output
    batch = tmp_path / "batch.jsonl"
    result = runner.invoke(main, ["batch", str(folder), "--model", "debug", "--all-scores", "--out", str(batch),
                                  "--workers", "0"])
    assert result.exit_code == 0, result.output
    from_batch = tmp_path / "batch.html"
    result = runner.invoke(main, ["thresholds", "report", str(th), str(batch), "--labels", str(labels),
                                  "--out", str(from_batch)])
    assert result.exit_code == 0, result.output
    # Same clips, same scores (rounded to 6 decimals in the batch file): the same table.
    rows_cache, rows_batch = _table_rows(from_cache.read_text()), _table_rows(from_batch.read_text())
    assert [r[:2] for r in rows_cache] == [r[:2] for r in rows_batch] and len(rows_cache) == 2
    n_clips = len(labels.read_text().splitlines()) - 1
    assert f"all {n_clips} labelled clips" in from_cache.read_text()


def test_thresholds_report_refuses_to_replace_other_files(speech_music, tmp_path, dcase2017):
    """An existing non-report --out is left alone (exit 1) unless --force."""
    scores, labels, thresholds = dcase2017
    npz = tmp_path / "scores.npz"
    np.savez(npz, val_scores=scores, val_labels=labels)
    th = thresholds.save(tmp_path / "th.json")
    out = tmp_path / "keep.html"
    out.write_text("mine")
    result = CliRunner().invoke(main, ["thresholds", "report", str(th), str(npz), "--out", str(out)])
    assert result.exit_code == 1 and "not a calitag report" in result.output and out.read_text() == "mine"
    result = CliRunner().invoke(main, ["thresholds", "report", str(th), str(npz), "--out", str(out), "--force"])
    assert result.exit_code == 0 and is_report(out)


def test_calibrate_refuses_a_report_path_it_would_clobber_before_working(speech_music, tmp_path):
    """`calibrate --report` onto an existing non-report file fails at once: nothing scored, nothing written."""
    folder, labels = speech_music
    keep = tmp_path / "keep.html"
    keep.write_text("mine")
    result = CliRunner().invoke(main, ["calibrate", str(folder), "--labels", str(labels), "--model", "debug",
                                       "--out", str(tmp_path / "th.json"), "--report", str(keep)])
    assert result.exit_code == 1 and "not a calitag report" in result.output
    assert keep.read_text() == "mine" and not (tmp_path / "th.json").exists()


@pytest.mark.torch
def test_cross_validated_report_uses_each_folds_decisions(speech_music, tmp_path):
    """With folds, the table's calibrated F1 is the cross-validated one calibrate measured, not a refit's."""
    from calitag.pipeline.calibrate import calibrate
    from calitag.pipeline.labels import read_clip_labels
    from calitag.pipeline.report import calibration_report
    from calitag.pipeline.tagger import Tagger

    folder, labels = speech_music
    result = calibrate(Tagger.load("debug", device="cpu"), folder, read_clip_labels(labels), out=tmp_path / "th.json",
                       folds=3, method="exact", seed=0)
    text = calibration_report(result)
    rows = {cells[0][0]: [float(a or b) for a, b in cells[1:12]] for cells in _table_rows(text)}
    for i, name in enumerate(result.classes):
        assert rows[name.lower()][9] == pytest.approx(result.calibrated.f1[i], abs=1e-5)
        assert rows[name.lower()][6] == pytest.approx(result.default.f1[i], abs=1e-5)
    assert "3-fold cross-validation" in text and f"all {result.n_held_out} clips, each decided by the fold" in text


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through playwright, with a fresh profile; skips where either is absent."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1366, "height": 800})
        yield context
        context.close()


@pytest.mark.slow  # 3 to 7 s here: Chromium starts and YAMNet scores audio_samples
def test_calibrate_report_renders_in_chromium(browser, yamnet_cached, audio_samples, tmp_path):
    """The report of `calitag calibrate audio_samples` loads without console errors, shows one figure per
    labelled class plus the summary, is not blank, and sorts its table on a header click."""
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["calibrate", str(audio_samples), "--labels", str(audio_samples / "labels.csv"),
                                       "--out", str(tmp_path / "th.json"), "--report", str(out)])
    assert result.exit_code == 0, result.output
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(out.as_uri(), wait_until="load")
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests)
    supports = [int(cell.get_attribute("data-v")) for cell in page.locator("#class-table tbody tr td:nth-child(2)").all()]
    labelled = sum(s > 0 for s in supports)
    assert labelled >= 5
    assert page.locator("figure[data-kind=class]").count() == labelled
    assert page.locator("figure.plot").count() == labelled + 1  # plus the summary figure
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 1500 and pixels.std() > 20  # a long page with dark figures on white, not blank
    change = page.locator("#class-table thead tr:last-child th", has_text="change")
    change.click()
    change.click()  # descending
    first = page.locator("#class-table tbody tr").first.locator("td:nth-child(12)").get_attribute("data-v")
    values = [float(v) for v in (c.get_attribute("data-v") for c in
                                 page.locator("#class-table tbody tr td:nth-child(12)").all()) if v]
    assert float(first) == max(values)
    page.close()


@pytest.mark.torch
def test_calibrate_events_report_lists_the_tuned_stack(shared, tmp_path):
    """`calibrate-events --report` shows per class the event-F1 at 0.5 and tuned, as the command prints them."""
    soundscapes = Path(__file__).resolve().parent.parent / "audio_samples" / "soundscapes"
    out = tmp_path / "sed.html"
    result = CliRunner().invoke(main, [
        "calibrate-events", str(soundscapes), "--events", str(soundscapes / "strong_labels_tune.tsv"),
        "--model", "crnn-dcase2019", "--checkpoint", str(shared / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.h5"),
        "--out", str(tmp_path / "sed.json"), "--device", "cpu", "--report", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    checked = 0
    for line in result.output.splitlines():
        match = re.match(r"(\w+)\s+([\d.]+)\s+([\d.]+)\s+(median|mean|none)", line)
        if match:
            row = next(r for r in text.split("<tr") if f"<td>{match[1]}</td>" in r)
            tuned, baseline = (float(v) for v in re.findall(r"data-v=\"([^\"]+)\"", row)[:2][::-1])
            assert (100 * tuned, 100 * baseline) == pytest.approx((float(match[2]), float(match[3])), abs=0.06)
            assert match[4] in row
            checked += 1
    assert checked == 2  # the two classes of the soundscapes: Speech, Alarm_bell_ringing
    assert "id='events'" in text and _figures(text) == []
