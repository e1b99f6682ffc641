"""`calitag models`: the registered models, their classes and checkpoints."""

from __future__ import annotations

from pathlib import Path

import click

from calitag.cli._common import CACHE_DIR_OPTION, available_models, download_progress, reported


@click.group("models")
def models_group() -> None:
    """List the registered models; fetch or import their checkpoints."""


@models_group.command("list")
@CACHE_DIR_OPTION
def models_list(cache_dir: Path | None) -> None:
    """Show each model: classes, sample rate, and whether its weights are in the cache."""
    from calitag.models import checkpoints
    from calitag.models.registry import get_spec

    click.echo(f"cache: {checkpoints.cache_dir(cache_dir)}")
    rows = [("name", "classes", "rate", "weights", "description")]
    for name in available_models():
        spec = get_spec(name)
        rows.append((name, str(len(spec.class_names)), f"{spec.frontend.sample_rate}",
                     checkpoints.status(name, cache_dir=cache_dir), spec.description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])


@models_group.command("classes")
@click.argument("name", type=click.Choice(available_models()))
@click.option("--grep", "pattern", default=None, help="Only class names containing this text (case-insensitive).")
def models_classes(name: str, pattern: str | None) -> None:
    """List NAME's class names, one per line with its output index (what labels and thresholds use)."""
    from calitag.models.registry import get_spec

    for index, label in enumerate(get_spec(name).class_names):
        if pattern is None or pattern.lower() in label.lower():
            click.echo(f"{index}\t{label}")


@models_group.command("fetch")
@click.argument("name", type=click.Choice(available_models()))
@CACHE_DIR_OPTION
def models_fetch(name: str, cache_dir: Path | None) -> None:
    """Download NAME's published checkpoint into the cache and verify its sha256."""
    from calitag.models.checkpoints import fetch

    update, close = download_progress(f"fetching {name}")
    try:
        with reported():
            path = fetch(name, cache_dir=cache_dir, on_progress=update)
    finally:
        close()
    click.echo(f"{name}: {path}")


@models_group.command("import")
@click.argument("name", type=click.Choice(available_models()))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@CACHE_DIR_OPTION
def models_import(name: str, file: Path, cache_dir: Path | None) -> None:
    """Verify FILE as NAME's checkpoint and copy it into the cache (FILE is left as it is)."""
    from calitag.models.checkpoints import import_checkpoint

    with reported():
        path = import_checkpoint(name, file, cache_dir=cache_dir)
    click.echo(f"{name}: {path}")

