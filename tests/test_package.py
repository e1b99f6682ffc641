"""The installed package: import paths, console script, version."""

from __future__ import annotations

import importlib
import subprocess
import sys

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


def test_console_script_help_lists_groups():
    """The installed `calitag` script lists every command group."""
    out = subprocess.run(
        [sys.executable, "-m", "calitag.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for group in ("tag", "batch", "calibrate", "thresholds", "models"):
        assert group in out
