"""The installed package: import paths, console script, version."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import calitag
from calitag.cli import main


def test_subpackages_import_under_calitag():
    """pipeline/, models/ and thresholds/ are importable only as calitag.* subpackages."""
    for name in ("calitag.pipeline", "calitag.models", "calitag.thresholds"):
        assert importlib.import_module(name).__name__ == name
    for top in ("pipeline", "models", "thresholds"):
        found = importlib.util.find_spec(top)
        assert found is None or "site-packages" not in str(found.origin), top


def test_version_option_prints_version():
    """`calitag --version` prints the package version."""
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert calitag.__version__ in result.output


COMMANDS = {"batch", "calibrate", "calibrate-events", "detect", "events", "models", "suggest", "tag", "thresholds"}


def listed_commands(help_text: str) -> set[str]:
    """The command names of a click help page's Commands section (first word of each of its lines)."""
    section = help_text.split("Commands:", 1)[1]
    return {line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()}


def test_console_script_help_lists_groups():
    """The installed `calitag` script and `python -m calitag.cli` list exactly the commands of the CLI."""
    script = Path(sys.executable).with_name("calitag")
    for command in ([str(script)], [sys.executable, "-m", "calitag.cli"]):
        out = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True).stdout
        assert listed_commands(out) == COMMANDS, command


def test_listed_commands_reads_only_the_commands_section():
    """The help parser takes command names from the Commands section, not from words elsewhere on the page."""
    page = "Usage: calitag [OPTIONS] COMMAND\n\n  Tag audio.\n\nCommands:\n  calibrate-events  Tune.\n  tag  Tag.\n"
    assert listed_commands(page) == {"calibrate-events", "tag"}


def test_every_package_folder_is_in_the_distribution():
    """pyproject lists every folder with an __init__.py under calitag/ (a missing one is absent from `pip install .`)."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(Path(folder).relative_to(root).parts)
             for folder, _, files in os.walk(root / "calitag", followlinks=True)  # pipeline/ etc. are links
             if "__init__.py" in files}
    assert {"calitag", "calitag.cli", "calitag.pipeline"} <= found <= listed
