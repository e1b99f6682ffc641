"""The calitag command line: one module per command group, each a thin click layer over one library call.

Library code raises TaggingError subclasses; the commands print results, ``skip PATH: REASON`` lines
for files that fail, and ``error: MESSAGE`` for a failure of the command (exit code 1).
"""

from __future__ import annotations

import sys

import click

from calitag._version import __version__
from calitag.cli._common import CalitagGroup
from calitag.cli.batch import batch_command
from calitag.cli.calibrate import calibrate_command
from calitag.cli.events import calibrate_events_command, detect_command, events_group
from calitag.cli.models import models_group
from calitag.cli.suggest import suggest_command
from calitag.cli.tag import tag_command
from calitag.cli.thresholds import thresholds_group


@click.group(cls=CalitagGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="calitag")
def main() -> None:
    """Tag audio recordings with calibrated per-class decisions."""
    _tolerate_undecodable_names()


def _tolerate_undecodable_names() -> None:
    """Print file names that are not valid UTF-8 (lone surrogates in Python) as escapes instead of crashing."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


for _command in (tag_command, batch_command, calibrate_command, thresholds_group, models_group, detect_command,
                 calibrate_events_command, events_group, suggest_command):
    main.add_command(_command)
