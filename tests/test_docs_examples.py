"""Every example of README.md and docs/*.md runs as written and prints what the page shows.

Conventions (docs pages of every helper follow them):

- ```console blocks: each command on a line starting with ``$ `` (a line ending in ``\\`` continues it), followed
  by the output the page shows. An output line may hold ``...`` where a part varies (times, paths); a line that
  is only ``...`` stands for any number of lines. A command with no output shown is only checked to succeed.
  Its exit code must be 0, unless the output shown has an ``error:`` line or a ``skip PATH: REASON`` line (a file
  failed: exit code 1).
- ```python blocks are executed in order, in one namespace per page.
- ```sh / ```bash / ```text blocks are shown, never run (install commands, cluster set-ups, file layouts).
- ``<!-- docs-test: skip REASON -->`` on the line before a fence keeps that block out of the run, with its
  reason (e.g. weights a newcomer cannot get); ``<!-- docs-test: torch -->`` (or ``events``) anywhere on a page runs the
  page only where torch is installed.

Each page runs top to bottom in a fresh temporary folder holding ``audio_samples/`` and ``examples/`` (links to
the repository's) and whatever its earlier blocks wrote; YAMNet comes from the test cache (offline).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SKIP = re.compile(r"<!-- docs-test: skip (.*?) -->\s*$")
TORCH_PAGE = "<!-- docs-test: torch -->"
EVENTS_PAGE = "<!-- docs-test: events -->"  # a page whose outputs need the events extra (sed_scores_eval)
RUN_KINDS = ("console", "python")
COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    """One fenced example: its kind (console, python, ...), text, first line number, and skip reason if any."""

    kind: str
    text: str
    line: int
    skip: str | None


def page_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page with the skip marker (if any) on the line just above each."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = SKIP.search(before)
        line = text.count("\n", 0, match.start()) + 2
        blocks.append(Block(match.group(1), match.group(2), line, marker.group(1).strip() if marker else None))
    return blocks


def console_steps(block: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each ``$ `` command of a console block."""
    steps: list[tuple[str, list[str]]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            raise ValueError(f"console block line {line!r} comes before any `$ ` command")
        command = line[2:]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        steps.append((command, output))
    return steps


def _line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.rstrip().split("...")) + r"\Z")


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` lines match ``expected``: ``...`` inside a line matches any text, a ``...`` line any lines."""
    patterns = [None if line.strip() == "..." else _line_pattern(line) for line in expected]
    actual = [line.rstrip() for line in actual]
    # reachable[j]: the patterns seen so far can consume exactly the first j actual lines.
    reachable = [True] + [False] * len(actual)
    for pattern in patterns:
        if pattern is None:
            first = reachable.index(True) if True in reachable else len(reachable)
            reachable = [j >= first for j in range(len(actual) + 1)]
        else:
            reachable = [False] + [reachable[j - 1] and bool(pattern.match(actual[j - 1]))
                                   for j in range(1, len(actual) + 1)]
    return reachable[-1]


def expects_failure(expected: list[str]) -> bool:
    """Whether the output shown says the command fails: an error line, or a file skipped (exit code 1)."""
    return any(line.startswith(("error:", "Error:", "skip ")) for line in expected)


def _command_env(bin_dir: Path) -> dict[str, str]:
    """The environment of a page's commands: `calitag` is this interpreter's, on this test run's calitag."""
    import calitag

    bin_dir.mkdir()
    shim = bin_dir / "calitag"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m calitag.cli "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ)
    package_root = str(Path(calitag.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    return env


def run_console(block: Block, page: Path, env: dict[str, str], cwd: Path) -> None:
    for command, expected in console_steps(block.text):
        done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT_S)
        where = f"{page.name} line {block.line}: $ {command}"
        actual = done.stdout.splitlines()
        if expects_failure(expected):
            assert done.returncode != 0, f"{where}\nexpected a failure, exit code 0:\n{done.stdout}"
        else:
            assert done.returncode == 0, f"{where}\nexit code {done.returncode}:\n{done.stdout}"
        if expected:
            assert output_matches(expected, actual), (
                f"{where}\n--- the page shows:\n" + "\n".join(expected) + "\n--- the command printed:\n" + done.stdout)


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_examples_run(page, yamnet_cached, tmp_path, monkeypatch):
    """Each console command of the page prints what the page shows, and each python block runs."""
    text = page.read_text(encoding="utf-8")
    if TORCH_PAGE in text:
        pytest.importorskip("torch", reason=f"{_page_id(page)} needs the torch extra")
    if EVENTS_PAGE in text:
        pytest.importorskip("sed_scores_eval", reason=f"{_page_id(page)} needs the events extra")
    blocks = [b for b in page_blocks(page) if b.kind in RUN_KINDS and b.skip is None]
    if not blocks:
        return  # a page of prose and shown-only blocks (install commands, cluster set-ups) has nothing to run
    work = tmp_path / "work"
    work.mkdir()
    for name in ("audio_samples", "examples"):
        (work / name).symlink_to(REPO / name, target_is_directory=True)
    env = _command_env(tmp_path / "bin")
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        if block.kind == "console":
            run_console(block, page, env, work)
        else:
            exec(compile(block.text, f"{page.name}:{block.line}", "exec"), namespace)  # noqa: S102 (the page's code)


def test_skipped_blocks_say_why():
    """A block kept out of the run has a reason of a few words, and nothing else is left out silently."""
    skipped = [(page, b) for page in PAGES for b in page_blocks(page) if b.skip is not None]
    for page, block in skipped:
        assert len(block.skip.split()) >= 3, f"{_page_id(page)} line {block.line}: give the reason"
        assert block.kind in RUN_KINDS, f"{_page_id(page)} line {block.line}: a {block.kind} block never runs"


def test_console_blocks_parse():
    """Every console block starts with a `$ ` command (else its lines would be neither command nor output)."""
    for page in PAGES:
        for block in page_blocks(page):
            if block.kind == "console":
                assert console_steps(block.text), f"{_page_id(page)} line {block.line}: empty console block"


def test_output_matching_rules():
    """`...` inside a line matches any text, a `...` line any number of lines (none too), the rest exactly."""
    assert output_matches(["a ... c"], ["a b c"]) and not output_matches(["a ... c"], ["a b d"])
    assert output_matches(["x", "...", "y"], ["x", "1", "2", "y"]) and output_matches(["x", "...", "y"], ["x", "y"])
    assert not output_matches(["x", "y"], ["x", "z", "y"]) and output_matches(["..."], [])
    assert expects_failure(["error: no such file"]) and expects_failure(["skip a.wav: file not found", "..."])
    assert not expects_failure(["wrote th.json"])


def test_readme_is_short_and_starts_with_the_three_jobs():
    """README.md has at most 250 lines, and its first 60 show `calitag tag`, `calitag calibrate`, `calitag batch`."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, len(lines)
    first_screen = "\n".join(lines[:60])
    for command in ("$ calitag tag", "$ calitag calibrate", "$ calitag batch"):
        assert command in first_screen, command
