"""The README's Python section: every block runs as written, from a folder laid out like the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def python_section_blocks(readme: Path = REPO / "README.md") -> list[str]:
    """The ```python blocks between the "## Python" heading and the next second-level heading."""
    text = readme.read_text(encoding="utf-8")
    section = re.search(r"^## Python\n(.*?)(?=^## )", text, flags=re.S | re.M)
    if section is None:
        return []
    return re.findall(r"^```python\n(.*?)^```", section.group(1), flags=re.S | re.M)


def code_lines(block: str) -> list[str]:
    """The lines of a block that are code (not blank, not a comment)."""
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_each_job_takes_at_most_three_lines():
    """The section shows tag, calibrate, batch and detect, each in at most 3 lines through `import calitag`."""
    blocks = python_section_blocks()
    joined = "\n".join(blocks)
    assert len(blocks) >= 4 and "import calitag" in blocks[0]
    for call in (".tag(", ".calibrate(", "calitag.run_batch(", ".detect("):
        assert call in joined, call
    assert all(len(code_lines(block)) <= 3 for block in blocks), [len(code_lines(b)) for b in blocks]


def test_python_section_runs(yamnet_cached, tmp_path, monkeypatch):
    """Every block runs in order on audio_samples/ (yamnet, offline) and leaves the files it says it writes."""
    for name in ("audio_samples", "examples"):
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in python_section_blocks():
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102  (the README's own code)
    assert namespace["tags"][0].source.endswith("speech_01.wav")
    assert json.loads(Path("th.json").read_text())["model"] == "yamnet"
    rows = Path("results.csv").read_text().splitlines()
    assert len(namespace["results"]) == 45 and rows[0].startswith("path,") and len(rows) > 45
    assert json.loads(Path("sed.json").read_text())["events"]["classes"]
    assert namespace["events"] and all(e.file == "heldout_00.flac" for e in namespace["events"])
