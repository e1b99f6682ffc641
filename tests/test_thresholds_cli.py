"""`calitag thresholds fit|evaluate` through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from calitag.cli import main
from calitag.thresholds import Thresholds, evaluate


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def dcase2017(shared):
    """The paper's DCASE2017 task-4 score file (val and eval splits, 17 classes) in ../shared."""
    return shared / "data" / "dcase2017_task4.npz"


@pytest.fixture(scope="module")
def val_eval_17(tmp_path_factory):
    """A seeded .npz shaped like the DCASE2017 file: val and eval splits of 17-class long-tailed scores."""
    from calitag.thresholds import synthetic_scores

    scores, labels = synthetic_scores(1200, 17, seed=7)
    path = tmp_path_factory.mktemp("scores") / "val_eval_17.npz"
    np.savez(path, val_scores=scores[:500], val_labels=labels[:500], eval_scores=scores[500:],
             eval_labels=labels[500:])
    return path


def _run(runner, *args):
    return runner.invoke(main, list(map(str, args)), catch_exceptions=False)


def test_fit_writes_file_and_prints_json(runner, val_eval_17, tmp_path):
    """fit --json prints one JSON object with val and eval micro-F1 of the file it writes, which loads."""
    out = tmp_path / "th.json"
    result = _run(runner, "thresholds", "fit", val_eval_17, "--method", "sgl", "--objective", "micro-f1",
                  "--init", "0.3", "--lr", "0.01", "--epochs", "100", "--slope", "50", "--seed", "0",
                  "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == "sgl" and summary["out"] == str(out) and summary["seconds"] > 0
    th = Thresholds.load(out)
    assert th.options["init"] == 0.3 and th.n_classes == 17
    with np.load(val_eval_17) as data:
        val = evaluate(data["val_scores"], data["val_labels"], th).micro_f1
        held_out = evaluate(data["eval_scores"], data["eval_labels"], th).micro_f1
    assert summary["val_micro_f1"] == pytest.approx(val, abs=1e-12)
    assert summary["eval_micro_f1"] == pytest.approx(held_out, abs=1e-12)
    assert summary["thresholds"] == pytest.approx(dict(zip(th.class_names, map(float, th.values))))


def test_fit_json_reaches_the_paper_on_dcase2017(runner, dcase2017, tmp_path):
    """fit --json with the paper's SGL settings reports >= 61.8 eval micro-F1 on DCASE2017."""
    result = _run(runner, "thresholds", "fit", dcase2017, "--method", "sgl", "--objective", "micro-f1",
                  "--init", "0.3", "--lr", "0.01", "--epochs", "100", "--slope", "50", "--seed", "0",
                  "--out", tmp_path / "th.json", "--json")
    assert result.exit_code == 0, result.output
    assert round(100 * json.loads(result.stdout)["eval_micro_f1"], 1) >= 61.8


def test_fit_text_then_evaluate_table_and_json(runner, val_eval_17, tmp_path):
    """fit prints a summary; evaluate prints a per-class table, and with --json the eval micro-F1."""
    out = tmp_path / "th.json"
    result = _run(runner, "thresholds", "fit", val_eval_17, "--method", "default", "--init", "0.3", "--out", out)
    assert result.exit_code == 0, result.output
    th = Thresholds.load(out)
    with np.load(val_eval_17) as data:
        np.testing.assert_array_equal(th.apply(data["val_scores"]), data["val_scores"] > 0.3)
        held_out = f"{100 * evaluate(data['eval_scores'], data['eval_labels'], th).micro_f1:.1f}"
        val_f1 = evaluate(data["val_scores"], data["val_labels"], th).micro_f1
    assert f"eval micro-F1 {held_out}" in result.output
    table = _run(runner, "thresholds", "evaluate", val_eval_17, "--thresholds", out)
    assert table.exit_code == 0
    assert table.output.count("\n") >= 17 + 3 and "micro" in table.output and held_out in table.output
    as_json = json.loads(_run(runner, "thresholds", "evaluate", val_eval_17, "--thresholds", out, "--json").stdout)
    assert as_json["split"] == "eval" and f"{100 * as_json['eval_micro_f1']:.1f}" == held_out
    val = json.loads(_run(runner, "thresholds", "evaluate", val_eval_17, "--thresholds", out, "--split", "val",
                          "--json").stdout)
    assert val["split"] == "val" and val["val_micro_f1"] == pytest.approx(val_f1, abs=1e-12)


def test_default_threshold_reproduces_the_paper_through_the_cli(runner, dcase2017, tmp_path):
    """fit --method default --init 0.3 prints 59.0 eval micro-F1 on DCASE2017; evaluate gives 59.0 eval, 53.8 val."""
    out = tmp_path / "th.json"
    result = _run(runner, "thresholds", "fit", dcase2017, "--method", "default", "--init", "0.3", "--out", out)
    assert result.exit_code == 0 and "eval micro-F1 59.0" in result.output
    table = _run(runner, "thresholds", "evaluate", dcase2017, "--thresholds", out)
    assert table.exit_code == 0 and "59.0" in table.output
    as_json = json.loads(_run(runner, "thresholds", "evaluate", dcase2017, "--thresholds", out, "--json").stdout)
    assert round(100 * as_json["eval_micro_f1"], 1) == 59.0
    val = json.loads(_run(runner, "thresholds", "evaluate", dcase2017, "--thresholds", out, "--split", "val",
                          "--json").stdout)
    assert round(100 * val["val_micro_f1"], 1) == 53.8


def test_fit_csv_scores_with_labels(runner, tmp_path):
    """A .csv score matrix with a .csv label matrix fits with the exact solver."""
    rng = np.random.default_rng(0)
    labels = (rng.random((80, 3)) < 0.4).astype(int)
    scores = np.clip(labels * 0.5 + rng.random((80, 3)) * 0.5, 0, 1)
    np.savetxt(tmp_path / "s.csv", scores, delimiter=",", header="a,b,c", comments="")
    np.savetxt(tmp_path / "y.csv", labels, delimiter=",", fmt="%d")
    result = _run(runner, "thresholds", "fit", tmp_path / "s.csv", "--labels", tmp_path / "y.csv",
                  "--method", "exact", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["thresholds"]) == {"a", "b", "c"}


def _npz(path, scores, labels, **extra):
    np.savez(path, val_scores=scores, val_labels=labels, **extra)
    return path


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.array([[0.2, np.nan], [0.3, 0.4]]), np.array([[0, 1], [1, 0]]), "NaN/inf"),
        (np.array([[0.2, 3.0], [0.3, 0.4]]), np.array([[0, 1], [1, 0]]), "--logits"),
        (np.array([[0.2, 0.1], [0.3, 0.4]]), np.array([[0, 1]]), "shape"),
        (np.array([[0.2, 0.1], [0.3, 0.4]]), np.array([[0, 1], [3, 0]]), "binary"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "empty"),
    ],
)
def test_fit_bad_input_is_one_line_error(runner, tmp_path, scores, labels, message):
    """Bad score files end with `error: ...` on stderr, exit code 1 and no traceback."""
    path = _npz(tmp_path / "bad.npz", scores, labels)
    result = runner.invoke(main, ["thresholds", "fit", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output


def test_logits_flag_accepts_logits(runner, tmp_path):
    """Scores outside [0, 1] fit once --logits is given."""
    rng = np.random.default_rng(1)
    labels = (rng.random((60, 2)) < 0.5).astype(int)
    path = _npz(tmp_path / "logits.npz", labels * 4.0 - 2.0 + rng.normal(0, 1, (60, 2)), labels)
    result = runner.invoke(main, ["thresholds", "fit", str(path), "--logits", "--method", "exact", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["val_micro_f1"] > 0.8


def test_no_positive_class_is_a_warning(runner, tmp_path):
    """A class without positives prints `warning: ...` and still writes thresholds."""
    rng = np.random.default_rng(2)
    labels = (rng.random((50, 2)) < 0.5).astype(int)
    labels[:, 1] = 0
    path = _npz(tmp_path / "nopos.npz", rng.random((50, 2)), labels)
    result = runner.invoke(main, ["thresholds", "fit", str(path), "--out", str(tmp_path / "th.json")])
    assert result.exit_code == 0
    assert "warning: 1 class(es) have no positive example" in result.stderr
    assert np.isfinite(Thresholds.load(tmp_path / "th.json").values).all()


def test_evaluate_refuses_other_class_list(runner, tmp_path, tagger_like_scores):
    """A thresholds file for another class list gives `error:` and exit code 1."""
    out = tmp_path / "th.json"
    scores, labels, names = tagger_like_scores
    ten = _npz(tmp_path / "ten.npz", scores, labels, classes=np.array(names))
    _run(runner, "thresholds", "fit", ten, "--method", "default", "--out", out)
    rng = np.random.default_rng(3)
    other = _npz(tmp_path / "other.npz", rng.random((20, 4)), (rng.random((20, 4)) < 0.5).astype(int),
                 classes=np.array(["a", "b", "c", "d"]))
    result = runner.invoke(main, ["thresholds", "evaluate", str(other), "--thresholds", str(out)])
    assert result.exit_code == 1 and "another class list" in result.stderr
    (tmp_path / "broken.json").write_text("[1, 2]")
    result = runner.invoke(main, ["thresholds", "evaluate", str(other), "--thresholds", str(tmp_path / "broken.json")])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")


def test_usage_errors_exit_2(runner, tmp_path):
    """A score matrix without --labels, or a bad option value, is a usage error (exit 2)."""
    np.save(tmp_path / "s.npy", np.full((4, 2), 0.5))
    result = runner.invoke(main, ["thresholds", "fit", str(tmp_path / "s.npy")])
    assert result.exit_code == 2 and "--labels" in result.output
    result = runner.invoke(main, ["thresholds", "fit", str(tmp_path / "s.npy"), "--init", "2"])
    assert result.exit_code == 2


def test_bad_solver_option_is_one_line_error(runner, tmp_path, tagger_like_scores):
    """An option that does not apply to the method is reported as `error:` with exit code 1."""
    scores, labels, _ = tagger_like_scores
    path = _npz(tmp_path / "scores.npz", scores, labels)
    result = runner.invoke(main, ["thresholds", "fit", str(path), "--method", "exact", "--lr", "0.1"])
    assert result.exit_code == 1 and "has no option lr" in result.stderr


def test_fit_infinite_slope_is_one_line_error(runner, val_eval_17):
    """`thresholds fit --slope inf` exits 1 with a message naming the slope, not a ZeroDivisionError."""
    result = runner.invoke(main, ["thresholds", "fit", str(val_eval_17), "--slope", "inf"])
    assert result.exit_code == 1 and "slope" in result.output and "finite" in result.output


def test_fit_command_never_imports_torch_or_sklearn(val_eval_17, tmp_path):
    """`calitag thresholds fit` runs in a process that never imports torch or scikit-learn."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from calitag.cli import main\n"
        "try:\n"
        f"    main(['thresholds', 'fit', {str(val_eval_17)!r}, '--out', {str(tmp_path / 'th.json')!r}])\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert Thresholds.load(tmp_path / "th.json").options["init_source"] == "label_rate"


def test_fit_command_imports_no_heavy_library(tmp_path):
    """`thresholds fit` runs in a fresh process without importing torch, scipy, sklearn, librosa, matplotlib or onnx."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from calitag.thresholds import synthetic_scores

    scores, labels = synthetic_scores(300, 20, seed=1)
    path = tmp_path / "scores.npz"
    np.savez(path, val_scores=scores, val_labels=labels)
    code = ("import sys\nfrom calitag.cli import main\n"
            "try:\n    main(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print('HEAVY', sorted(m for m in ('torch', 'scipy', 'sklearn', 'librosa', 'matplotlib', 'onnx', "
            "'onnxruntime', 'numba') if m in sys.modules))\n")
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, "thresholds", "fit", str(path), "--out", str(tmp_path / "th.json")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    assert Thresholds.load(tmp_path / "th.json").n_classes == 20


def test_fit_probabilities_writes_maps_that_the_file_applies(runner, val_eval_17, tmp_path):
    """fit --probabilities auto writes one map per class; Thresholds.probabilities of the file gives (n, C)."""
    out = tmp_path / "th.json"
    result = _run(runner, "thresholds", "fit", val_eval_17, "--probabilities", "auto", "--out", out)
    assert result.exit_code == 0, result.output
    assert "probability maps (auto)" in result.stdout
    th = Thresholds.load(out)
    with np.load(val_eval_17) as data:
        probs = th.probabilities(data["eval_scores"])
    assert probs.shape == (700, 17) and np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    assert len(th.probability_maps.maps) == 17


def test_fit_without_new_options_writes_the_same_thresholds(runner, val_eval_17, tmp_path):
    """No --target and no --probabilities: the values equal the library's plain fit, no maps, no targets."""
    from calitag.thresholds import fit

    out = tmp_path / "th.json"
    assert _run(runner, "thresholds", "fit", val_eval_17, "--out", out).exit_code == 0
    th = Thresholds.load(out)
    with np.load(val_eval_17) as data:
        plain = fit(data["val_scores"], data["val_labels"])
    assert th.values.tolist() == plain.values.tolist()
    assert th.probability_maps is None and "target" not in th.per_class
