"""The calitag command line: a thin click layer that formats results and errors.

This is the only module that prints. Library code raises TaggingError subclasses; each
command turns them into a one-line message and a non-zero exit code.
"""

from __future__ import annotations

import click

from calitag._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="calitag")
def main() -> None:
    """Tag audio recordings with calibrated per-class decisions."""


# --- tag (issue 4) -------------------------------------------------------------------------


# --- models (issue 4) ----------------------------------------------------------------------


# --- thresholds (issue 3) ------------------------------------------------------------------


# --- calibrate (issue 5) -------------------------------------------------------------------


# --- batch (issue 5) -----------------------------------------------------------------------


# --- detect, calibrate-events (issue 6) ----------------------------------------------------


if __name__ == "__main__":
    main()
