"""`calitag suggest`: which clips to label next for the thresholds, and what labeling them would add."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from calitag.cli._common import CLI_OBJECTIVES, FORCE_OPTION, JSON_OPTION, ModelChoice, check_out, model_options, reported


def _is_suggestion_list(path: Path) -> bool:
    from calitag.pipeline.suggest import is_suggestion_list

    return is_suggestion_list(path)


@click.command("suggest")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The clips labeled so far, in the `calitag calibrate` label format.")
@click.option("--n", "n", type=click.IntRange(min=1), default=20, show_default=True, help="How many clips to suggest.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV to write: filename,class,score,threshold,doubt, most informative first.")
@model_options()
@click.option("--objective", type=click.Choice([o for o in CLI_OBJECTIVES if o.endswith("-f1")]),
              default="micro-f1", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes that score the folder, as in `calitag batch`.")
@FORCE_OPTION
@JSON_OPTION
def suggest_command(source: Path, labels_path: Path, n: int, out_path: Path, model: ModelChoice, objective: str,
                    seed: int, workers: int | None, force: bool, as_json: bool) -> None:
    """Suggest the N clips of SOURCE to label next, and estimate what N more labels would add.

    SOURCE is a folder of audio (scored with --model) or a `calitag batch --all-scores` output of
    the same model. The clips listed in --labels are the labeled ones; the picks lie near where each
    class's threshold should sit, spread over the classes and balanced so the labeled set stays
    representative, in the mix whose simulated refit does best (docs/label-loop.md).
    """
    from calitag.pipeline.suggest import run_suggest

    check_out(out_path, inputs=(labels_path, source, model.checkpoint), kind="suggestion list (CSV)",
              is_kind=_is_suggestion_list, force=force)
    with reported():
        result = run_suggest(model, source, labels_path, n, out=out_path, objective=objective.replace("-", "_"),
                             seed=seed, workers=workers)
    for path in result.failed:
        click.echo(f"skip {path}: could not be scored", err=True)
    if as_json:
        click.echo(json.dumps(_as_dict(result, out_path)))
        return
    _echo(result, out_path)


def _as_dict(result: Any, out_path: Path) -> dict[str, object]:
    return {"out": str(out_path), "n_labeled": result.n_labeled, "n_unlabeled": result.n_unlabeled,
            "classes": list(result.classes),
            "picks": [{"filename": p.filename, "class": p.class_name, "score": p.score, "threshold": p.threshold,
                       "doubt": p.doubt} for p in result.picks],
            "gain": result.gain.to_dict() if result.gain is not None else None,
            "curve": result.curve.to_dict() if result.curve is not None else None}


def _echo(result: Any, out_path: Path) -> None:
    click.echo(f"{result.n_labeled} labeled, {result.n_unlabeled} unlabeled clips; "
               f"{len(result.classes)} labeled classes")
    for pick in result.picks[:10]:
        click.echo(f"  {pick.filename}  {pick.class_name}  score {pick.score:.3f}  threshold {pick.threshold:.3f}")
    if len(result.picks) > 10:
        click.echo(f"  ... {len(result.picks) - 10} more in {out_path}")
    gain = result.gain
    if gain is None:
        click.echo("gain: too few labeled clips for a learning curve (8 needed)")
    else:
        click.echo(f"{gain.n_more} more labels: {result.curve.objective.replace('_f', '-F')} "
                   f"{100 * gain.value:+.1f} points [{100 * gain.low:+.1f}, {100 * gain.high:+.1f}] "
                   f"({100 * gain.level:.0f}% over {len(result.curve.values)} learning-curve repeats)")
    click.echo(f"wrote {out_path}")
