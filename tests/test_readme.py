"""The README's Python section: every block runs as written, from a folder laid out like the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CRNN_FILE = "crnn_dcase2019_pellegrini_irit_task4_1.h5"


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


def import_crnn_weights() -> bool:
    """Put the CRNN's published weights in the default cache from ../shared; False where they are absent."""
    from calitag.models.checkpoints import import_checkpoint, status

    source = REPO.parent / "shared" / "models" / CRNN_FILE
    if status("crnn-dcase2019") == "cached":
        return True
    if not source.is_file():
        return False
    import_checkpoint("crnn-dcase2019", source)
    return True


@pytest.mark.torch
@pytest.mark.slow
def test_python_section_runs(yamnet_cached, tmp_path, monkeypatch):
    """Every block runs in order on audio_samples/ and leaves the files it says it writes."""
    (tmp_path / "audio_samples").symlink_to(REPO / "audio_samples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    *clip_blocks, detect_block = python_section_blocks()
    for block in clip_blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102  (the README's own code)
    assert namespace["tags"][0].source.endswith("speech_01.wav")
    assert json.loads(Path("th.json").read_text())["model"] == "yamnet"
    records = [json.loads(line) for line in Path("results.jsonl").read_text().splitlines()]
    assert len(records) == len(namespace["results"]) == 45 and records[0]["thresholds"].startswith("th.json:")
    if not import_crnn_weights():
        pytest.skip(f"the detect block needs the CRNN's weights ({CRNN_FILE}, in ../shared/models here)")
    exec(compile(detect_block, "README.md", "exec"), namespace)  # noqa: S102
    assert json.loads(Path("sed.json").read_text())["events"]["classes"]
    assert namespace["events"] and all(e.file == "heldout_00.flac" for e in namespace["events"])
